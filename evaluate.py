"""`python -m evaluate`: re-run evaluations on logged or saved SAEs (thin entry point; the code is in src/masksae)."""

from masksae.cli import evaluate

if __name__ == "__main__":
    evaluate()
