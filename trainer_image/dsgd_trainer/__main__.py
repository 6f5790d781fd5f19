"""`python -m dsgd_trainer [--config FILE]`: one training rank (torchrun starts one per process).

The config is read and validated before torch is imported, so a bad config is
reported (exit code 64) in a fraction of a second instead of after torch's import.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dsgd_contract import exit_codes
from dsgd_contract.config_file import ConfigFileError, read_config
from dsgd_contract.pod import CONFIG_ENV

from dsgd_trainer.stopping import exit_without_teardown


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dsgd_trainer",
        description="One rank of a dsgd training run; start it with dsgd_trainer.launch.",
    )
    parser.add_argument("--config", help="training config JSON (default: $DSGD_CONFIG)")
    args = parser.parse_args(argv)
    try:
        config = read_config(args.config or os.environ.get(CONFIG_ENV))
    except ConfigFileError as error:
        # Every rank finds the same problem: one copy per pod is enough.
        if os.environ.get("LOCAL_RANK", "0") == "0":
            print(error, file=sys.stderr, flush=True)
        return exit_codes.INVALID_CONFIG

    from dsgd_trainer.train import main as train  # torch is imported only now

    return train(config)


if __name__ == "__main__":
    exit_without_teardown(main())
