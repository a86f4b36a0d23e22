"""`python -m train`: train SAEs with masked regularization (thin entry point; the code is in src/masksae)."""

from masksae.cli import train

if __name__ == "__main__":
    train()
