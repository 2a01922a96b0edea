import time, sys, torch
torch.set_num_threads(1)
from hypermeta.engine.batched import train_group
from hypermeta.engine.runner import Job
from hypermeta.engine.measurement import Measurement
from hypermeta.space import DQNConfig
cfg = DQNConfig(net_arch="small", batch_size=64, train_freq=4, target_update_interval=250, learning_starts=1000, gamma=0.99, buffer_size=50000)
for task, T in [("CartPole-v1", 4000), ("MountainCar-v0", 4000), ("Acrobot-v1", 3000), ("frozenlake", 4000)]:
    jobs = [Job(task, "p", cfg, Measurement(T, 2, 5), seed=s) for s in range(64)]
    c = time.process_time(); train_group(jobs); print(sys.argv[1], task, "cpu s", round(time.process_time() - c, 2), flush=True)
