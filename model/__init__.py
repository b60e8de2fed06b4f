"""wbvae model package: pure PyTorch and image maths (never imports ``app``)."""
