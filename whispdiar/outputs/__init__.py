"""Outputs: one ``Result`` rendered in every format, written where the user asked.

- ``writers``: one writer per format (JSON, SRT, VTT, text, TSV, RTTM, stats, HTML);
- ``report``: the self-contained HTML report; ``stats``: talk time per speaker;
- ``rttm``: RTTM reading and writing; ``destination``: stdout or files, atomic writes.
"""
