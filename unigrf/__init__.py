"""UniGRF: unified generative retrieval and ranking (SIGIR 2025), trained and searched with Ray."""

__version__ = "0.1.0"
