"""Bounded-overlap tiling (issue 16): lgfn-upscale's default context per tile, auto tiles for large frames."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from lgfn.inference import upscale
from lgfn.inference.tiling import BOUNDED_OVERLAP, bounded_overlap, default_overlap, tile_work, upscale_window
from lgfn.models import LGFN

SMALL = dict(num_feat=8, num_extract_blocks=2, num_align_stages=2, deformable_groups=2, num_lfm=2, num_gfm=2,
             gfm_slice_channels=2, num_rcab=4)  # lgfn_small's depth (radius 108), narrow


class _Paper:
    net_class, config = "LGFN", {}  # the paper's sizes: receptive radius 448


def test_work_of_exact_and_bounded_tiles_on_the_issue_frames():
    assert default_overlap(_Paper()) == 448 and bounded_overlap(_Paper()) == BOUNDED_OVERLAP == 48
    assert tile_work(480, 854, 64, 448) == pytest.approx(89, rel=0.02)  # the issue's 89x
    assert tile_work(1080, 1920, 256, 448) == pytest.approx(14.5, rel=0.01)
    assert tile_work(1080, 1920, 256, 48) < 1.9 and tile_work(480, 854, 256, 48) < 1.7


def test_explicit_tile_uses_the_bounded_overlap_and_exact_on_request(capsys):
    net = _Paper()
    big = SimpleNamespace(height=1000, width=1000)
    assert upscale.plan_tiles(net, big, 256, None) == (256, 48)
    assert "48 px of context per tile, not the 448 px" in capsys.readouterr().err
    assert upscale.plan_tiles(net, big, 256, "exact") == (256, 448)
    assert upscale.plan_tiles(net, big, 256, 20) == (256, 20)


def test_large_frames_are_tiled_by_default_and_tile_0_runs_whole_frames(capsys):
    net = _Paper()
    hd = SimpleNamespace(height=1080, width=1920)
    assert upscale.plan_tiles(net, hd, None, None) == (256, 48)
    err = capsys.readouterr().err
    assert "1920x1080 LR frames: tiles of 256 with 48 px" in err and "14.5x" in err and "--tile 0" in err
    assert upscale.plan_tiles(net, hd, 0, None) == (None, 48)
    assert upscale.plan_tiles(net, SimpleNamespace(height=480, width=854), None, None) == (None, 48)


def test_overlap_argument_accepts_exact_and_rejects_words():
    args = upscale.build_parser().parse_args(["in", "out", "--overlap", "exact", "--tile", "0"])
    assert args.overlap == "exact" and args.tile == 0
    assert upscale.main(["in", "out", "--overlap", "some"]) == 2


def test_bounded_tiles_are_close_to_untiled_and_exact_tiles_equal_it():
    # Random lgfn_small-depth weights (no trained large model here): bounded is approximate, exact is exact.
    torch.manual_seed(0)
    net = LGFN(num_frames=7, **SMALL).eval()
    frames = torch.rand(7, 3, 24, 320, generator=torch.Generator().manual_seed(1))
    full = upscale_window(net, frames)
    assert default_overlap(net) == 108
    exact = upscale_window(net, frames, tile=96, overlap=default_overlap(net))
    bounded = upscale_window(net, frames, tile=96, overlap=bounded_overlap(net))
    assert float((exact - full).abs().max()) < 1e-4
    assert 0 < float((bounded - full).abs().max()) < 0.05
