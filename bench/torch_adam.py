"""lrfast.torch against torch.optim's AdamW: the same as ``python -m lrfast bench
--torch`` (see :mod:`lrfast.cli.torch_bench`).

    python bench/torch_adam.py [--sizes 1e3,1e5,1e6,1e7] [--gpt2] [--rounds 15]
"""
import sys

from lrfast.cli.torch_bench import main

if __name__ == "__main__":
    sys.exit(main())
