"""Static scorers: their math (``scorers``) and the timed scoring run (``run``)."""
