"""`gradleak report`: one self-contained HTML page (and optionally a CSV) from a sweep's result store."""

from __future__ import annotations

import argparse

from gradleak.metrics.leak import PERCEPTUAL_THRESHOLD, PSNR_THRESHOLD_DB


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="HTML report of a sweep's result store: tables, plots, best/worst images",
                       description="Summarize a result store per setting (mean ± std over seeds and images, "
                                   "BRR/WSRR), plot every metric against every swept axis and show the best and "
                                   "worst reconstruction per setting, all in one self-contained HTML file.")
    p.add_argument("store", help="the sweep's result store (SQLite file)")
    p.add_argument("-o", "--out", required=True, help="HTML file to write (e.g. report.html)")
    p.add_argument("--csv", help="also write one CSV line per stored cell to this file")
    p.add_argument("--sweep", help="report only this sweep of the store (default: every cell in it)")
    p.add_argument("--psnr-threshold", type=float, default=PSNR_THRESHOLD_DB,
                   help=f"a sample leaks at PSNR >= this many dB (default {PSNR_THRESHOLD_DB:g})")
    p.add_argument("--perceptual-threshold", type=float, default=PERCEPTUAL_THRESHOLD,
                   help=f"... and perceptual distance <= this (default {PERCEPTUAL_THRESHOLD:g})")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from gradleak.cli.args import output_file
    from gradleak.cli.render import out_console
    from gradleak.sweep.html import render_report

    output_file(args.out)
    output_file(args.csv, "--csv")

    files = render_report(args.store, args.out, sweep=args.sweep, csv_path=args.csv,
                          psnr_threshold=args.psnr_threshold, perceptual_threshold=args.perceptual_threshold)
    s = files.summary
    csv = f" and {files.csv}" if files.csv else ""
    out_console.print(f"wrote {files.page}{csv}: {s.cells} cells ({s.done} done, {s.failed} failed), "
                      f"{len(s.settings)} settings", markup=False, highlight=False)
    return 0


__all__ = ["add_parser", "cmd_report"]
