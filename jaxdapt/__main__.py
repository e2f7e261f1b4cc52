"""`python -m jaxdapt <tool> ...`: the same as the `jaxdapt` command."""

from jaxdapt.tools.main import cli

cli()
