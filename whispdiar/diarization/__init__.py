"""Who spoke when: the diarization stage.

- ``segmentation``: pyannote segmentation-3.0 (ONNX) over sliding 10-s windows;
- ``embedding``: CAM++ speaker embeddings (ONNX) from Kaldi fbank features;
- ``clustering`` and ``spectral``: the speaker count and partition of the embeddings;
- ``diarizer``: the three stages (analyse, cluster, reconstruct) and their config;
- ``confidence``: how sure each speaker label is;
- ``export_campplus``: the one-off CAM++ PyTorch → ONNX export.
"""

from .diarizer import Analysis, Diarization, DiarizationConfig, Diarizer

__all__ = ["Analysis", "Diarization", "DiarizationConfig", "Diarizer"]
