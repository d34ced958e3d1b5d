"""What a model card says about each architecture: a description, the paper, and its BibTeX."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ARCHITECTURES", "Architecture", "architecture_for"]


@dataclass(frozen=True)
class Architecture:
    name: str
    domain: str  # "speech" | "music"
    description: str
    paper: str
    paper_url: str
    bibtex: str


_HTDEMUCS_BIB = """@inproceedings{rouard2023hybrid,
  title     = {Hybrid Transformers for Music Source Separation},
  author    = {Rouard, Simon and Massa, Francisco and D{\\'e}fossez, Alexandre},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year      = {2023}
}"""

_HDEMUCS_BIB = """@inproceedings{defossez2021hybrid,
  title     = {Hybrid Spectrogram and Waveform Source Separation},
  author    = {D{\\'e}fossez, Alexandre},
  booktitle = {Proceedings of the ISMIR 2021 Workshop on Music Source Separation},
  year      = {2021}
}"""

_DEMUCS_BIB = """@article{defossez2019music,
  title   = {Music Source Separation in the Waveform Domain},
  author  = {D{\\'e}fossez, Alexandre and Usunier, Nicolas and Bottou, L{\\'e}on and Bach, Francis},
  journal = {arXiv preprint arXiv:1911.13254},
  year    = {2019}
}"""

ARCHITECTURES: dict[str, Architecture] = {
    "mossformer": Architecture(
        name="MossFormer",
        domain="speech",
        description=(
            "MossFormer is a time-domain speech separator: a 1-D convolutional encoder, a masking network of "
            "gated single-head transformer blocks with convolution-augmented joint local (quadratic, within "
            "groups of frames) and global (linearised, over the whole sequence) self-attention, and a "
            "transposed-convolution decoder that turns each speaker's masked representation back into a "
            "waveform."
        ),
        paper=(
            "MossFormer: Pushing the Performance Limit of Monaural Speech Separation using Gated Single-Head "
            "Transformer with Convolution-Augmented Joint Self-Attentions (Zhao & Ma, ICASSP 2023)"
        ),
        paper_url="https://arxiv.org/abs/2302.11824",
        bibtex="""@inproceedings{zhao2023mossformer,
  title     = {{MossFormer}: Pushing the Performance Limit of Monaural Speech Separation using Gated
               Single-Head Transformer with Convolution-Augmented Joint Self-Attentions},
  author    = {Zhao, Shengkui and Ma, Bin},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year      = {2023}
}""",
    ),
    "mossformer2": Architecture(
        name="MossFormer2",
        domain="speech",
        description=(
            "MossFormer2 is a time-domain speech separator that adds a recurrent module to MossFormer: a "
            "1-D convolutional encoder, a masking network in which every gated single-head transformer "
            "block (joint local quadratic and global linearised self-attention) is followed by a gated "
            "FSMN block, a feedforward sequential memory network whose memory is a dense stack of "
            "dilated convolutions (an RNN-free recurrence that captures fine-scale temporal patterns), "
            "and a transposed-convolution decoder. The released model has 55.7M parameters and is "
            "published at 8 kHz (ModelScope, WSJ0-2mix) and 16 kHz (ClearerVoice-Studio "
            "MossFormer2_SS_16K, one model trained on several corpora: 22.0 dB SI-SNRi on WSJ0-2mix, "
            "16.7 on Libri2Mix, 17.4 on WHAM!, 15.5 on LRS2-2Mix). For real recordings, ClearerVoice's "
            "16 kHz MossFormer2 (`demixers convert clearvoice-mossformer2`) is a far better choice than "
            "the small default model bundled with demixers, which knows synthetic voices only; it costs "
            "about 120 times more compute per second of audio (328 against 2.8 GFLOP)."
        ),
        paper=(
            "MossFormer2: Combining Transformer and RNN-Free Recurrent Network for Enhanced Time-Domain "
            "Monaural Speech Separation (Zhao et al., ICASSP 2024)"
        ),
        paper_url="https://arxiv.org/abs/2312.11825",
        bibtex="""@inproceedings{zhao2024mossformer2,
  title     = {{MossFormer2}: Combining Transformer and {RNN}-Free Recurrent Network for Enhanced
               Time-Domain Monaural Speech Separation},
  author    = {Zhao, Shengkui and Ma, Yukun and Ni, Chongjia and Zhang, Chong and Wang, Hao and
               Nguyen, Trung Hieu and Zhou, Kun and Yip, Jia Qi and Ng, Dianwen and Ma, Bin},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year      = {2024}
}""",
    ),
    "htdemucs": Architecture(
        name="Hybrid Transformer Demucs (HTDemucs)",
        domain="music",
        description=(
            "Hybrid Transformer Demucs is a two-branch U-Net for music source separation: one branch "
            "works on "
            "the waveform, the other on the spectrogram, and a cross-domain transformer encoder "
            "joins them at "
            "the bottleneck (self-attention within each domain, cross-attention between them) before both "
            "decoders produce each stem, the spectrogram branch through a mask and the inverse STFT."
        ),
        paper="Hybrid Transformers for Music Source Separation (Rouard, Massa & Défossez, ICASSP 2023)",
        paper_url="https://arxiv.org/abs/2211.08553",
        bibtex=_HTDEMUCS_BIB,
    ),
    "hdemucs": Architecture(
        name="Hybrid Demucs (HDemucs)",
        domain="music",
        description=(
            "Hybrid Demucs is a dual U-Net for music source separation with a temporal (waveform) and a "
            "spectral (STFT) branch that share their innermost layers; the spectral output is turned back "
            "into audio with the inverse STFT and summed with the waveform output for each stem."
        ),
        paper="Hybrid Spectrogram and Waveform Source Separation (Défossez, ISMIR 2021 MDX workshop)",
        paper_url="https://arxiv.org/abs/2111.03600",
        bibtex=_HDEMUCS_BIB,
    ),
    "demucs": Architecture(
        name="Demucs",
        domain="music",
        description=(
            "Demucs is a waveform-to-waveform U-Net for music source separation: strided 1-D convolutional "
            "encoder blocks with GLU activations, a bidirectional LSTM at the bottleneck and transposed-"
            "convolution decoder blocks with skip connections, producing one waveform per stem."
        ),
        paper="Music Source Separation in the Waveform Domain (Défossez, Usunier, Bottou & Bach, 2019)",
        paper_url="https://arxiv.org/abs/1911.13254",
        bibtex=_DEMUCS_BIB,
    ),
    "demucs_bag": Architecture(
        name="Bag of Demucs models",
        domain="music",
        description=(
            "A bag of Demucs models: several (Hybrid/Hybrid Transformer) Demucs separators whose estimates "
            "are averaged with per-source weights, as in the official Demucs releases."
        ),
        paper="Hybrid Transformers for Music Source Separation (Rouard, Massa & Défossez, ICASSP 2023)",
        paper_url="https://arxiv.org/abs/2211.08553",
        bibtex=_HTDEMUCS_BIB + "\n" + _HDEMUCS_BIB,
    ),
    "conv_tasnet": Architecture(
        name="Conv-TasNet",
        domain="speech",
        description=(
            "Conv-TasNet is a fully convolutional time-domain separator: a learned 1-D convolutional "
            "encoder, "
            "a temporal convolutional network (stacked dilated depthwise-separable convolution blocks) that "
            "estimates one mask per source on the encoded mixture, and a linear decoder back to waveforms."
        ),
        paper=(
            "Conv-TasNet: Surpassing Ideal Time-Frequency Magnitude Masking for Speech Separation "
            "(Luo & Mesgarani, IEEE/ACM TASLP 2019)"
        ),
        paper_url="https://arxiv.org/abs/1809.07454",
        bibtex="""@article{luo2019convtasnet,
  title   = {Conv-{TasNet}: Surpassing Ideal Time--Frequency Magnitude Masking for Speech Separation},
  author  = {Luo, Yi and Mesgarani, Nima},
  journal = {IEEE/ACM Transactions on Audio, Speech, and Language Processing},
  volume  = {27},
  number  = {8},
  pages   = {1256--1266},
  year    = {2019}
}""",
    ),
    "dprnn_tasnet": Architecture(
        name="DPRNN-TasNet",
        domain="speech",
        description=(
            "DPRNN-TasNet is a time-domain separator whose masking network is a dual-path recurrent network: "
            "the encoded sequence is cut into overlapping chunks, and blocks of intra-chunk and inter-chunk "
            "bidirectional LSTMs alternate so that very long sequences are modelled with short recurrences."
        ),
        paper=(
            "Dual-Path RNN: Efficient Long Sequence Modeling for Time-Domain Single-Channel Speech "
            "Separation "
            "(Luo, Chen & Yoshioka, ICASSP 2020)"
        ),
        paper_url="https://arxiv.org/abs/1910.06379",
        bibtex="""@inproceedings{luo2020dprnn,
  title     = {Dual-Path {RNN}: Efficient Long Sequence Modeling for Time-Domain Single-Channel Speech
               Separation},
  author    = {Luo, Yi and Chen, Zhuo and Yoshioka, Takuya},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  pages     = {46--50},
  year      = {2020}
}""",
    ),
    "dttnet": Architecture(
        name="DTTNet (Dual-Path TFC-TDF UNet)",
        domain="music",
        description=(
            "DTTNet is a lightweight spectrogram-domain U-Net for music source separation: TFC-TDF blocks "
            "(time-frequency convolutions with time-distributed fully-connected layers) in the encoder and "
            "decoder, and improved dual-path modules (alternating recurrences over time and "
            "frequency) at the "
            "bottleneck; it estimates the complex spectrogram of its target stem."
        ),
        paper=(
            "Music Source Separation Based on a Lightweight Deep Learning Framework (DTTNET: Dual-Path "
            "TFC-TDF UNet) (Chen, Vekkot & Shukla, ICASSP 2024)"
        ),
        paper_url="https://arxiv.org/abs/2309.08684",
        bibtex="""@inproceedings{chen2024dttnet,
  title     = {Music Source Separation Based on a Lightweight Deep Learning Framework
               ({DTTNET}: Dual-Path {TFC-TDF} {UNet})},
  author    = {Chen, Junyu and Vekkot, Susmitha and Shukla, Pancham},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  pages     = {656--660},
  year      = {2024},
  doi       = {10.1109/ICASSP48485.2024.10448020}
}""",
    ),
    "stacked_hourglass": Architecture(
        name="Stacked Hourglass Network",
        domain="music",
        description=(
            "The stacked hourglass network separates music in the magnitude-spectrogram domain: a stack of "
            "hourglass (encoder-decoder with skip connections) modules, each producing a mask per "
            "source that "
            "the next module refines, with intermediate supervision of every module's masks."
        ),
        paper="Music Source Separation Using Stacked Hourglass Networks (Park, Kim, Lee & Kwak, ISMIR 2018)",
        paper_url="https://arxiv.org/abs/1805.08559",
        bibtex="""@inproceedings{park2018stacked,
  title     = {Music Source Separation Using Stacked Hourglass Networks},
  author    = {Park, Sungheon and Kim, Taehoon and Lee, Kyogu and Kwak, Nojun},
  booktitle = {Proceedings of the 19th International Society for Music Information Retrieval
               Conference (ISMIR)},
  year      = {2018}
}""",
    ),
    "bs_roformer": Architecture(
        name="BS-RoFormer (Band-Split RoPE Transformer)",
        domain="music",
        description=(
            "BS-RoFormer separates music in the complex STFT domain: the spectrogram of the stereo mixture "
            "is split into frequency bands, each band is embedded by its own RMSNorm and linear layer, and "
            "a stack of axial transformers alternates attention along time (per band) and across bands "
            "(per frame), with rotary position embeddings and gated attention heads. Per-band MLP mask "
            "estimators (Tanh, GLU) give one complex mask per stem, applied to the mixture's spectrogram "
            "before the inverse STFT. "
            "Converted community checkpoints (viperx, unwa, Gabox, becruily) were trained with "
            "Music-Source-Separation-Training (MSST); this port follows MSST upstream where audio-separator "
            "0.47.1 differs: its rotary helper leaves queries and keys unrotated with rotary-embedding-torch "
            "0.9, it ignores zero_dc (never zeroes the DC bin) and skip_connection, and it drops the last "
            "partial hop of the output; every such flag is pinned in the converted config (MSST's zero_dc "
            "default became True in late 2025)."
        ),
        paper="Music Source Separation with Band-Split RoPE Transformer (Lu, Wang, Kong & Hung, ICASSP 2024)",
        paper_url="https://arxiv.org/abs/2309.02612",
        bibtex="""@inproceedings{lu2024music,
  title     = {Music Source Separation with Band-Split {RoPE} Transformer},
  author    = {Lu, Wei-Tsung and Wang, Ju-Chiang and Kong, Qiuqiang and Hung, Yun-Ning},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year      = {2024},
  note      = {arXiv:2309.02612}
}""",
    ),
    "mel_band_roformer": Architecture(
        name="Mel-Band RoFormer",
        domain="music",
        description=(
            "Mel-Band RoFormer is BS-RoFormer with overlapping bands taken from a mel filterbank: each band "
            "gathers the STFT bins under one mel triangle, axial transformers with rotary embeddings "
            "alternate attention along time and across bands, per-band MLP mask estimators give complex "
            "masks, and the masks of bins covered by several bands are averaged before the inverse STFT. "
            "The band map is stored in the model's config (no librosa at run time). "
            "Converted community checkpoints (KimberleyJensen, unwa, Gabox, becruily) were trained with "
            "Music-Source-Separation-Training (MSST); this port follows MSST upstream where audio-separator "
            "0.47.1 differs: its rotary helper leaves queries and keys unrotated with rotary-embedding-torch "
            "0.9, and it ignores zero_dc, skip_connection and mlp_expansion_factor; every such flag is "
            "pinned in the converted config."
        ),
        paper="Mel-Band RoFormer for Music Source Separation (Wang, Lu & Won, 2023)",
        paper_url="https://arxiv.org/abs/2310.01809",
        bibtex="""@article{wang2023melband,
  title   = {Mel-Band {RoFormer} for Music Source Separation},
  author  = {Wang, Ju-Chiang and Lu, Wei-Tsung and Won, Minz},
  journal = {arXiv preprint arXiv:2310.01809},
  year    = {2023}
}""",
    ),
}


def architecture_for(model_type: str | None) -> Architecture | None:
    """The `Architecture` of a ``config.model_type``, or ``None`` for an unknown one."""
    if model_type is None:
        return None
    return ARCHITECTURES.get(model_type)
