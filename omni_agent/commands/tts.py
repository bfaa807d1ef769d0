"""``omni-agent tts "text" -o out.wav``: speak text with the streaming TTS stack."""

from __future__ import annotations

import argparse
import re
import sys

from omni_agent.settings import Settings


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "tts", parents=[common], help="speak text to a WAV file (talker + codec)",
        description="Speak text to a 24 kHz WAV file. With --model-path DIR holding Ming's release (root config "
                    "with talker_config, talker/ folder) it is Ming's talker and detokenizer, both required. Without "
                    "one the talker is the tiny preset with random weights (it babbles); --codes-from-text lets you "
                    "hear the codec itself: espeak-ng speaks the text, the codec encodes it to 50 Hz codes and the "
                    "streaming decoder rebuilds it.")
    p.add_argument("text", help="text to speak")
    p.add_argument("-o", "--output", required=True, metavar="WAV", help="output WAV file (24 kHz mono PCM16)")
    p.add_argument("--voice", help="talker voice prompt: luna, eng or a Ming voice-prompt .pt file (default: luna "
                                   "for Chinese text, else eng); an espeak-ng voice with --codes-from-text")
    p.add_argument("--lang", choices=["en", "cmn", "yue"], help="language for --codes-from-text (default: guessed)")
    p.add_argument("--codes-from-text", action="store_true",
                   help="reference codes from espeak-ng speech instead of the talker")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of the talker")
    p.set_defaults(func=run)


def _codes_from_text(args: argparse.Namespace) -> tuple:
    import numpy as np

    from audio.bpe import CodeBPE
    from audio.codec import load_codec
    from audio.codec.espeak import synthesize
    from audio.dsp import StreamingResampler, resample
    from audio.tts import OUTPUT_RATE

    lang = args.lang or ("cmn" if re.search(r"[\u4e00-\u9fff]", args.text) else "en")
    voice = args.voice or {"en": "en-us", "cmn": "cmn", "yue": "yue"}[lang]
    wave, sr = synthesize(args.text, voice)
    codec = load_codec("mel-vq")
    codes = codec.encode(resample(wave, sr, codec.input_rate))
    n_tok = len(CodeBPE.default().encode(codes))
    rs = StreamingResampler(codec.sample_rate, OUTPUT_RATE)
    out = []
    with codec.streaming() as dec:
        for i in range(0, len(codes), 25):  # feed the decoder as a talker would, a few codes at a time
            out.append(rs.push(dec.push(codes[i:i + 25])))
        out.append(rs.push(dec.flush()))
    out.append(rs.flush())
    info = f"espeak-ng voice {voice}: {len(codes)} codes (50 Hz), {n_tok} BPE tokens"
    return np.concatenate(out), info


def run(args: argparse.Namespace, settings: Settings) -> int:
    import soundfile as sf

    from audio.codec import CodecError
    from audio.talker import TalkerError
    from audio.voices import VoiceError
    from omni_agent.preflight import building, check_model, check_output_file, random_weights_notice

    check_output_file(args.output, "-o")
    if not args.codes_from_text:
        # With --model-path the talker comes from its talker/ folder or not at all: never random weights silently.
        check_model(settings, "talker")
    try:
        if args.codes_from_text:
            pcm, info = _codes_from_text(args)
        else:
            from audio.tts import StreamingTTS

            random_weights_notice(settings, "tts")
            with building("the talker" + ("" if settings.model.path else " (tiny preset, random weights)")):
                tts = StreamingTTS.build(settings, seed=args.seed)
            pcm = tts.synthesize(args.text, voice=args.voice)
            talker = "tiny, RANDOM weights (babble, not words)" if tts.random_weights else "Ming's, from the checkpoint"
            info = f"talker {talker}, detokenizer {tts.codec.name}, voice {args.voice or 'luna/eng by language'}"
    except (CodecError, TalkerError, VoiceError) as e:
        print(f"omni-agent: error: {e}", file=sys.stderr)
        return 1
    sf.write(args.output, pcm, 24000, subtype="PCM_16")
    print(f"wrote {args.output}: {len(pcm) / 24000:.2f} s at 24 kHz; {info}")
    return 0
