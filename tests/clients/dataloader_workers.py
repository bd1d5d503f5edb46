"""A map-style Dataset of dicts, DataLoader with worker processes, a collate_fn, samplers
and random_split."""
import json

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset


class Sequences(Dataset):
    """Item i: a dict with a variable-length sequence and a label."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, idx):
        length = 1 + idx % 4
        seq = np.arange(length, dtype=np.float32) + idx
        return {"seq": torch.from_numpy(seq), "label": idx % 3}


def pad_collate(batch):
    longest = max(item["seq"].shape[0] for item in batch)
    seqs = torch.zeros(len(batch), longest)
    for i, item in enumerate(batch):
        seqs[i, :item["seq"].shape[0]] = item["seq"]
    labels = torch.tensor([item["label"] for item in batch])
    lengths = torch.tensor([item["seq"].shape[0] for item in batch])
    return seqs, labels, lengths


def main():
    out = {}
    ds = Sequences(10)
    loader = DataLoader(ds, batch_size=4, shuffle=False, num_workers=2, collate_fn=pad_collate,
                        pin_memory=True)
    batches = [(s.tolist(), y.tolist(), n.tolist()) for s, y, n in loader]
    out["padded_batches"] = batches
    out["len_loader"] = len(loader)

    x = torch.arange(24, dtype=torch.float32).view(12, 2)
    y = torch.arange(12) % 2
    tds = TensorDataset(x, y)
    loader = DataLoader(tds, batch_size=5, shuffle=False, num_workers=2, drop_last=True)
    out["default_collate"] = [[xb.sum().item(), yb.tolist()] for xb, yb in loader]

    g = torch.Generator()
    g.manual_seed(0)
    loader = DataLoader(tds, batch_size=4, shuffle=True, generator=g)
    seen = sorted(int(v) for _, yb in loader for v in (yb * 0 + 1).tolist())
    order = [xb[:, 0].tolist() for xb, _ in loader]
    out["shuffle_covers_all"] = int(len(seen) == 12)
    out["_shuffle_order"] = order

    dict_loader = DataLoader(ds, batch_size=2, collate_fn=lambda b: b)
    out["identity_collate"] = [len(b) for b in dict_loader]

    train, val = torch.utils.data.random_split(tds, [9, 3], generator=torch.Generator().manual_seed(42))
    out["split_sizes"] = [len(train), len(val)]
    out["split_disjoint"] = int(len(set(train.indices) | set(val.indices)) == 12)
    sub = Subset(tds, [0, 5, 7])
    out["subset"] = [sub[i][0].tolist() for i in range(len(sub))]
    cat = torch.utils.data.ConcatDataset([sub, tds])
    out["concat_len"] = len(cat)
    out["concat_item"] = cat[4][0].tolist()
    sampler = torch.utils.data.SequentialSampler(tds)
    bs = torch.utils.data.BatchSampler(sampler, batch_size=5, drop_last=False)
    out["batch_sampler"] = list(bs)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
