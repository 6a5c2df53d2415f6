"""`python -m mnist_pipeline.cli`, the same as the `mnist-pipeline` command."""

import sys

from mnist_pipeline.cli.main import main

sys.exit(main())
