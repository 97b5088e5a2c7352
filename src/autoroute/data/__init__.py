"""The data pipeline: sources -> raw -> interim -> processed (see dvc.yaml).

Stage entry points (each takes Hydra-style ``key=value`` overrides)::

    python -m autoroute.data.ingest      # read + validate sources      -> data/raw
    python -m autoroute.data.normalize   # taxonomy, aliases, dedup      -> data/interim
    python -m autoroute.data.build       # near-dups, splits, folds      -> data/processed
    python -m autoroute.data.feedback_log  # override log -> comparisons -> data/processed
    python -m autoroute.data.card        # data card                     -> data/README.md
"""
