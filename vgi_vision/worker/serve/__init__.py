"""The worker's half of each transport: the loops that feed requests to the dispatcher."""
