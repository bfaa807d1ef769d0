"""Audio I/O and DSP, VAD, the audio encoder, the speech codec, BPE over codec tokens, the talker and
streaming speech synthesis."""
