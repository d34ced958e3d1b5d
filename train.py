"""Train or fine-tune a demixers model from a YAML recipe (the same code as ``demixers train``).

python train.py --config configs/mossformer_tiny_cpu.yaml --output-dir runs/tiny
accelerate launch train.py --config configs/htdemucs_musdb18hq.yaml --output-dir runs/htdemucs
python train.py ... --resume                      # continue the newest checkpoint
python train.py ... --training.max_steps=20       # override any recipe key
"""

import sys

from demixers.trainers.cli import main

if __name__ == "__main__":
    sys.exit(main())
