import sys

from qwen_sae_jax.cli import main

sys.exit(main())
