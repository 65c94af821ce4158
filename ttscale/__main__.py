"""`python -m ttscale`: the same command line as `ttscale`."""

from ttscale.cli import app

app(prog_name="ttscale")
