"""Speech to text: whisper.cpp on packed speech, with word times.

- ``vad``: Silero VAD (ONNX), where there is speech at all;
- ``chunks``: speech regions packed into ~29-s chunks, one whisper window each;
- ``whisper``: the whisper.cpp binding (``Transcriber``): decoding lanes, options, model checks;
- ``words``: tokens to words, word times refined by the VAD, chunk time to recording time;
- ``ggml`` and ``convert``: whisper.cpp model files; CTranslate2 → ggml conversion and quantization.
"""
