"""Training, data, evaluation and reports for wbvae. Imports the serving core (``model``); never the reverse."""
