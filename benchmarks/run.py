"""`make bench`: run every benchmark module's `run()` and rewrite BENCHMARKS.md (tables, machine, command).

`python benchmarks/run.py [--only dcn,model,data,tiling,onnx,upscale,baselines] [--repeats N] [--full] [--update]`; --full adds the
paper-size model at 270p and more repeats (tens of minutes on 2 cores). Sections not run keep no stale numbers,
unless --update: then the sections of the existing BENCHMARKS.md that were not run stay as they were (the
header names the run they came from) and only the ones run are replaced.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402

NOTES = HERE / "NOTES.md"  # hand-written part of BENCHMARKS.md (switches, history of speed-ups)


def _section(title: str, command: str, body: str) -> str:
    return f"## {title}\n\n`{command}`\n\n{body}\n"


def _merge(old: str, notes: str, header: str, sections: list[str]) -> tuple[str, list[str]]:
    """--update: the old file's sections, with those run now replaced (or appended), and a header saying so.

    Sections are matched by their command line (`python benchmarks/bench_x.py`), so a renamed section is
    still replaced; the hand-written NOTES.md part (its headings) is dropped from the old file and re-added.
    """
    note_titles = {line.strip() for line in notes.splitlines() if line.startswith("## ")}
    old_header, *old_sections = old.split("\n## ")
    old_sections = ["## " + s.strip() + "\n" for s in old_sections]
    old_sections = [s for s in old_sections if s.splitlines()[0].strip() not in note_titles]

    def key(section: str) -> str:
        return next((x for x in section.splitlines() if x.startswith("`python benchmarks/")), section.splitlines()[0])

    new = {key(s): s for s in sections}
    merged = [new.pop(key(s), s) for s in old_sections] + list(new.values())
    kept = [s.splitlines()[0][3:] for s in merged if s not in sections]

    def line(tag: str) -> str:
        return next((x[len(tag) :] for x in old_header.splitlines() if x.startswith(tag)), "?")

    if kept:
        header += (f"- sections kept from the previous run (`--update`): {', '.join(kept)}; that run's command: "
                   f"{line('- command: ')}; machine: {line('- machine: ')}\n")
    return header, merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="dcn,model,data,tiling,onnx,upscale", help="comma-separated benchmark names")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per figure (median)")
    parser.add_argument("--full", action="store_true", help="also the slow paper-size runs")
    parser.add_argument("--out", default=str(common.ROOT / "BENCHMARKS.md"))
    parser.add_argument("--update", action="store_true",
                        help="replace only the sections run now; keep the others of the existing file")
    args = parser.parse_args(argv)
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    known = ("dcn", "model", "data", "tiling", "onnx", "upscale", "baselines")
    unknown = set(wanted) - set(known)
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(known)}")

    import torch

    torch.set_num_threads(common.threads())
    info = common.machine()
    cmd = "python benchmarks/run.py " + " ".join(argv if argv is not None else sys.argv[1:])
    started = time.time()
    sections = []
    if "dcn" in wanted:
        import bench_dcn

        rows = bench_dcn.run(args.repeats)
        sections.append(_section("Deformable convolution (lgfn.ops.deform_conv2d)", "python benchmarks/bench_dcn.py",
                                 bench_dcn.__doc__.strip() + "\n\n" + common.markdown(rows)))
        print(common.markdown(rows), flush=True)
    if "model" in wanted:
        import bench_model

        res = bench_model.run(args.repeats, full=args.full)
        body = (
            bench_model.__doc__.strip()
            + f"\n\nMeasured float32 matmul (1024^3 GEMM): **{res['matmul_gflops']} GFLOP/s** = the practical "
            "limit; `*_of_matmul` columns are achieved GFLOP/s (FlopCounter FLOPs, DCN counted as a conv) "
            "as a fraction of it.\n\n### Inference (batch 1, torch.inference_mode)\n\n"
            + common.markdown(res["inference"])
            + "\n\n### Tiled 270p -> 1080p (lgfn.inference.tiling.upscale_window, approximate pooling)\n\n"
            + common.markdown(res["tiled"])
            + "\n\n### Training (forward + L1 + backward + Adam)\n\n"
            + common.markdown(res["training"])
        )
        sections.append(_section("Whole model", "python benchmarks/bench_model.py", body))
        print(body, flush=True)
    if "data" in wanted:
        import bench_data

        rows = bench_data.run()
        sections.append(_section("Training loader per worker and layout", "python benchmarks/bench_data.py",
                                 bench_data.__doc__.strip() + "\n\n" + common.markdown(rows)))
        print(common.markdown(rows), flush=True)
    if "tiling" in wanted:
        import bench_tiling

        rows = bench_tiling.run()
        sections.append(_section("Bounded vs exact tiling (lgfn-upscale --tile)", "python benchmarks/bench_tiling.py",
                                 bench_tiling.__doc__.strip() + "\n\n" + common.markdown(rows)))
        print(common.markdown(rows), flush=True)
    if "upscale" in wanted:
        import bench_upscale

        rows = bench_upscale.run(args.repeats)
        sections.append(_section("lgfn-upscale: decoding and encoding overlapped with the network",
                                 "python benchmarks/bench_upscale.py",
                                 bench_upscale.__doc__.strip() + "\n\n" + common.markdown(rows)))
        print(common.markdown(rows), flush=True)
    if "baselines" in wanted:
        import bench_baselines

        rows = bench_baselines.run(args.repeats)
        sections.append(_section("BasicVSR beside LGFN (CPU inference at Vid4 size)",
                                 "python benchmarks/bench_baselines.py",
                                 bench_baselines.__doc__.strip() + "\n\n" + common.markdown(rows)))
        print(common.markdown(rows), flush=True)
    if "onnx" in wanted and (HERE / "bench_onnx.py").exists():
        try:
            bench_onnx = importlib.import_module("bench_onnx")
            rows = bench_onnx.run(args.repeats)
            sections.append(_section("ONNX Runtime vs PyTorch", "python benchmarks/bench_onnx.py",
                                     (bench_onnx.__doc__ or "").strip() + "\n\n" + common.markdown(rows)))
        except Exception as exc:  # noqa: BLE001 - another helper's module; report, do not abort the run
            sections.append(_section("ONNX Runtime vs PyTorch", "python benchmarks/bench_onnx.py",
                                     f"not run: {type(exc).__name__}: {exc}"))
    minutes = (time.time() - started) / 60
    machine = ", ".join(f"{k} {v}" for k, v in info.items())
    header = (
        "# Benchmarks\n\nGenerated by `make bench` — do not edit by hand (edit `benchmarks/NOTES.md`).\n\n"
        f"- command: `{cmd.strip()}` ({minutes:.1f} min)\n- machine: {machine}\n"
        f"- every figure is the median of {args.repeats} timed runs after a warm-up unless its table says "
        "otherwise; compared variants are timed interleaved in the same run, and only their ratios should "
        "be compared across runs (the machine may be shared).\n"
    )
    notes = NOTES.read_text() if NOTES.exists() else ""
    if args.update and Path(args.out).exists():
        header, sections = _merge(Path(args.out).read_text(), notes, header, sections)
    Path(args.out).write_text(header + "\n" + "\n".join(sections) + ("\n" + notes if notes else ""))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
