"""``python -m segd.server``: the segd server (same flags as ``segctl serve``)."""

from segd.server.main import run

if __name__ == "__main__":
    run()
