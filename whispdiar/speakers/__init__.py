"""Speakers you can name after the fact.

- ``source``       fingerprint of the audio a result was made from (recorded in JSON results);
- ``from_result``  enroll a speaker from their turns in a JSON/RTTM result;
- ``memory``       anonymous voiceprints of unknown voices ("Unknown 1"), remembered across
                   recordings, and the database operations on them (rename, merge, forget).

The database itself (schema, transactions, enrolled samples) is ``whispdiar.voiceprints``.
"""
