"""``sschsr-eval ckpt_path=... data=... scale=...``: per-scene and mean PSNR, SSIM, SAM, ERGAS.

Not available yet: there is no trained model to evaluate in this version. It says so and exits 2.
"""

from __future__ import annotations

import sys

from sschsr.cli._common import fail


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return 0
    return fail("sschsr-eval has no model to evaluate yet: this version ships the data pipeline only "
                "(the SSC-HSR network and its metrics are not implemented)")


if __name__ == "__main__":
    raise SystemExit(main())
