"""Download Raw-Microscopy and Raw-Drone (Zenodo record 5235536) into a data root and unpack them.

    python scripts/download_datasets.py [--root data] [--record URL] [--only PATTERN ...] [--no-unpack]
    python scripts/download_datasets.py --root data --check

Files go to <root>/downloads/ (verified by md5; an interrupted run resumes, a verified file is
skipped), archives are unpacked into <root>/microscopy and <root>/drone. --check only reports
which datasets are in place and exits 1 when one is missing. Any URL serving the Zenodo record
JSON works as --record (a mirror, or file:///path/to/record.json).
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

from raw2logit.data.download import download_record, human_size
from raw2logit.data.layout import (
    DATASET_TITLES,
    DATASETS,
    DOI,
    LICENSE,
    ZENODO_RECORD_URL,
    LayoutReport,
    check_layout,
)
from raw2logit.errors import InputError

log = partial(print, flush=True)


def print_layout(layout: LayoutReport) -> None:
    for name in DATASETS:
        if name in layout.scales:
            log(
                f"  {DATASET_TITLES[name]}: present in {layout.root / name} ({', '.join(layout.scales[name])})"
            )
        else:
            log(f"  {layout.missing[name]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="data", help="data root (default: data)")
    parser.add_argument(
        "--record", default=ZENODO_RECORD_URL, help=f"record metadata URL (default: {ZENODO_RECORD_URL})"
    )
    parser.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="download only files whose name matches this glob (repeatable), e.g. --only '*Drone*'",
    )
    parser.add_argument("--no-unpack", action="store_true", help="keep archives packed in <root>/downloads")
    parser.add_argument("--check", action="store_true", help="only check the layout under --root")
    parser.add_argument("--retries", type=int, default=3, help="retries per file after a network failure")
    args = parser.parse_args(argv)

    try:
        if args.check:
            layout = check_layout(args.root)
            log(f"Layout of {args.root}:")
            print_layout(layout)
            if layout.missing:
                print(f"error: {next(iter(layout.missing.values()))}", file=sys.stderr)
                return 1
            return 0

        summary = download_record(
            args.record, args.root, only=args.only, unpack=not args.no_unpack, log=log, retries=args.retries
        )
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(
            "interrupted: partial downloads are kept as .part files and resume on the next run",
            file=sys.stderr,
        )
        return 130

    total = sum(size or 0 for _, size, _ in summary.files)
    log(
        f"Done: {len(summary.files)} file(s), {human_size(total)}: {summary.count('downloaded')} downloaded, "
        f"{summary.count('resumed')} resumed, {summary.count('skipped')} already verified; "
        f"{len(summary.unpacked)} archive(s) unpacked."
    )
    log(f"Layout of {args.root}:")
    print_layout(summary.layout)
    log(
        f"Data: DOI {DOI} (https://doi.org/{DOI}), license {LICENSE}; please cite "
        "Oala et al., Data Models for Dataset Drift Controls in Machine Learning With Optical Images."
    )
    if summary.layout.missing and not args.only and not args.no_unpack:
        # The whole record was fetched and unpacked, so the loaders will not find what is missing.
        print(f"error: {next(iter(summary.layout.missing.values()))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
