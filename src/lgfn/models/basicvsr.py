"""BasicVSR (Chan et al., CVPR 2021): bidirectional recurrent propagation aligned by SPyNet flow.

The module layout matches the authors' released weights (BasicSR format; read them with
``lgfn.checkpoints.basicvsr_weights``). Each direction runs a shared trunk frame by frame over the input
frame concatenated with the previous state warped by SPyNet flow; the two states of a frame are fused by a
1x1 conv, upsampled 4x (two pixel shuffles) and added to the bilinear 4x upscaling of the frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import conv1x1, conv3x3, lrelu
from .spynet import SpyNet, flow_warp


class ResidualBlockReLU(nn.Module):
    """conv3x3, ReLU, conv3x3, + identity (BasicSR's ResidualBlockNoBN). M x C x h x w -> M x C x h x w."""

    def __init__(self, num_feat: int = 64) -> None:
        super().__init__()
        self.conv1 = conv3x3(num_feat, num_feat)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(num_feat, num_feat)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x)))


class PropagationTrunk(nn.Module):
    """conv3x3 + LReLU, then residual blocks. M x (3 + C) x h x w (frame, warped state) -> M x C x h x w."""

    def __init__(self, num_feat: int = 64, num_block: int = 30) -> None:
        super().__init__()
        self.main = nn.Sequential(
            conv3x3(num_feat + 3, num_feat),
            lrelu(),
            nn.Sequential(*(ResidualBlockReLU(num_feat) for _ in range(num_block))),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class BasicVSR(nn.Module):
    """BasicVSR, 4x. lr: B x N x 3 x h x w in [0, 1] -> B x 3 x 4h x 4w, the centre frame (N // 2).

    ``forward_sequence`` returns every frame (B x N x 3 x 4h x 4w, any N >= 1); ``forward`` only runs the
    propagation steps the centre frame depends on (N - 1 flows instead of 2 (N - 1)) and gives the same
    result as ``forward_sequence(lr)[:, N // 2]``. The output is not clamped; evaluation clamps to [0, 1].
    """

    def __init__(self, num_feat: int = 64, num_block: int = 30, num_frames: int = 7) -> None:
        super().__init__()
        # Constructor arguments, saved with every checkpoint so the network can be rebuilt from the file alone.
        self.config = {"num_feat": num_feat, "num_block": num_block, "num_frames": num_frames}
        if num_frames < 1 or num_frames % 2 == 0:
            raise ValueError(f"model.net.num_frames must be a positive odd number, got {num_frames}")
        self.num_feat = num_feat
        self.num_frames = num_frames
        self.centre = num_frames // 2
        self.scale = 4

        self.spynet = SpyNet()
        self.backward_trunk = PropagationTrunk(num_feat, num_block)
        self.forward_trunk = PropagationTrunk(num_feat, num_block)
        self.fusion = conv1x1(2 * num_feat, num_feat)
        self.upconv1 = conv3x3(num_feat, 4 * num_feat)
        self.upconv2 = conv3x3(num_feat, 4 * 64)
        self.conv_hr = conv3x3(64, 64)
        self.conv_last = conv3x3(64, 3)
        self.pixel_shuffle = nn.PixelShuffle(2)
        self.lrelu = lrelu()

    def _check(self, lr: torch.Tensor) -> None:
        if lr.dim() != 5 or lr.shape[2] != 3:
            raise ValueError(f"BasicVSR input must be B x N x 3 x h x w, got shape {tuple(lr.shape)}")

    def _flows(self, frames: list[torch.Tensor], pairs: list[tuple[int, int]]) -> list[torch.Tensor]:
        """SPyNet flow of each (ref, supp) index pair, one batched call. -> list of B x 2 x h x w."""
        if not pairs:
            return []
        ref = torch.cat([frames[i] for i, _ in pairs])
        supp = torch.cat([frames[j] for _, j in pairs])
        return list(self.spynet(ref, supp).chunk(len(pairs)))

    def _propagate(
        self, trunk: PropagationTrunk, frames: list[torch.Tensor], flows: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Run `trunk` along `frames` in order; flows[k] warps the state of frames[k] onto frames[k + 1]."""
        b, _, h, w = frames[0].shape
        state = frames[0].new_zeros(b, self.num_feat, h, w)
        states = []
        for k, frame in enumerate(frames):
            if k:
                state = flow_warp(state, flows[k - 1])
            state = trunk(torch.cat((frame, state), dim=1))
            states.append(state)
        return states

    def _reconstruct(self, back: torch.Tensor, fwd: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """Fuse both states and upsample 4x. B x C x h x w twice, B x 3 x h x w -> B x 3 x 4h x 4w."""
        out = self.lrelu(self.fusion(torch.cat((back, fwd), dim=1)))
        out = self.lrelu(self.pixel_shuffle(self.upconv1(out)))
        out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + F.interpolate(frame, scale_factor=4, mode="bilinear", align_corners=False)

    def forward_sequence(self, lr: torch.Tensor) -> torch.Tensor:
        """Every frame super-resolved. B x N x 3 x h x w in [0, 1] -> B x N x 3 x 4h x 4w."""
        self._check(lr)
        frames = list(lr.unbind(1))
        n = len(frames)
        # flow (i, i+1) brings the state of frame i+1 onto frame i (backward pass), (i+1, i) the reverse.
        flows = self._flows(frames, [(i, i + 1) for i in range(n - 1)] + [(i + 1, i) for i in range(n - 1)])
        to_prev, to_next = flows[: n - 1], flows[n - 1 :]
        back = self._propagate(self.backward_trunk, frames[::-1], to_prev[::-1])[::-1]
        fwd = self._propagate(self.forward_trunk, frames, to_next)
        return torch.stack([self._reconstruct(back[i], fwd[i], frames[i]) for i in range(n)], dim=1)

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        self._check(lr)
        if lr.shape[1] != self.num_frames:
            raise ValueError(
                f"BasicVSR was built for model.net.num_frames={self.num_frames} frames, got {lr.shape[1]}"
            )
        frames = list(lr.unbind(1))
        n, c = len(frames), self.centre
        # The centre depends on the backward pass over frames n-1 .. c and the forward pass over 0 .. c.
        flows = self._flows(frames, [(i, i + 1) for i in range(c, n - 1)] + [(i + 1, i) for i in range(c)])
        to_prev, to_next = flows[: n - 1 - c], flows[n - 1 - c :]
        back = self._propagate(self.backward_trunk, frames[c:][::-1], to_prev[::-1])[-1]
        fwd = self._propagate(self.forward_trunk, frames[: c + 1], to_next)[-1]
        return self._reconstruct(back, fwd, frames[c])
