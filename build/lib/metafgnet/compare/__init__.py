"""Comparisons over seeds: a grid of DVC experiments (:mod:`.grid`), their statistics
(:mod:`.stats`), summary files and figure (:mod:`.summary`), one MLflow run (:mod:`.tracking`);
the command is ``metafgnet compare`` (:mod:`.cli`)."""
