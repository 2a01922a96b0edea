from __future__ import annotations

import torch

torch.set_num_threads(1)  # tiny networks: threads only add overhead and noise on 2 cores
