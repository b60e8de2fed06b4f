"""wbvae HTTP service: the edge around ``model.corrector.Corrector``."""
