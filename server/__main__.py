"""``python -m server``: the segd server (same flags as ``segctl serve``)."""

from server.main import run

if __name__ == "__main__":
    run()
