"""Speaker identity: the one home of voiceprints and names.

- ``store``        the voiceprint database (schema, migrations, privacy, transactions),
                   enrollment and ``VoiceprintNamer`` (recognition during a run);
- ``naming``       matching clusters to voiceprints (thresholds, assignment, steering);
- ``source``       fingerprint of the audio a result was made from (recorded in JSON results);
- ``from_result``  enroll a speaker from their turns in a JSON/RTTM result;
- ``memory``       anonymous voiceprints of unknown voices ("Unknown 1"), remembered across
                   recordings, and the database operations on them (rename, merge, forget).
"""
