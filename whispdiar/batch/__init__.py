"""Batches of many inputs: a resumable manifest (``manifest``), input lists, and running
the files on a Ray cluster (``ray_runner``, needs the ``cluster`` extra)."""
