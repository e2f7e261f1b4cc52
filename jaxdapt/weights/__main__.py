import sys

from jaxdapt.weights.cli import main

sys.exit(main())
