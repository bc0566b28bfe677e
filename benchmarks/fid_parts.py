"""Carry the FID network to a machine reached only by small transfers: fp16 parts.

Here, where ``default_1.pt`` is cached (``<cache>/fid/default_1.pt``)::

    python -m benchmarks.fid_parts export --parts 3 --out .carry/fid16

writes ``.carry/fid16/part1/`` (manifest, skeleton, part 1), ``part2/``, ``part3/`` (about
14 MiB each); carry one folder per device call. There, once all have arrived::

    python -m benchmarks.fid_parts assemble .carry/fid16 [--out /tmp/fid/default_1_fp16.pt]
    export WAVAR_FID_NETWORK=/tmp/fid/default_1_fp16.pt   # or: wavar eval --fid-network ...

Reports made with it say ``"fid_network": "fp16-stored (development)"``. See
:mod:`wavar.eval.fid_parts`.
"""

from __future__ import annotations

import argparse
import sys

from wavar.errors import WavarError
from wavar.eval.fid_parts import assemble_network, export_network_fp16


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fid_parts", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write the cached network as fp16 parts")
    e.add_argument("--parts", type=int, default=3)
    e.add_argument("--out", required=True, metavar="DIR")
    e.add_argument("--source", default=None, metavar="PT",
                   help="the fp32 default_1.pt (default: the cached one)")
    a = sub.add_parser("assemble", help="rebuild a loadable network from the parts")
    a.add_argument("part_dir", metavar="DIR", help="folder holding all part folders")
    a.add_argument("--out", default=None, metavar="PT",
                   help="network file to write (default DIR/default_1_fp16.pt)")
    args = p.parse_args(argv)
    try:
        if args.cmd == "export":
            m = export_network_fp16(args.parts, args.out, args.source)
            for f in m["part_files"]:
                print(f"{args.out}/{f['file']}  {f['bytes'] / 2**20:.1f} MiB  sha1 {f['sha1']}")
            print(f"{args.out}/{m['skeleton']['file']}  (carry with part1)")
        else:
            path = assemble_network(args.part_dir, args.out)
            print(path)
            print(f"export WAVAR_FID_NETWORK={path}", file=sys.stderr)
    except WavarError as err:
        print(f"fid_parts: error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
