"""The "Tensors" blitz tutorial: creation, attributes, operations, the NumPy bridge."""
import json

import numpy as np
import torch


def main():
    out = {}
    data = [[1, 2], [3, 4]]
    x_data = torch.tensor(data)
    np_array = np.array(data)
    x_np = torch.from_numpy(np_array)
    x_ones = torch.ones_like(x_data)  # retains the properties of x_data
    x_rand = torch.rand_like(x_data, dtype=torch.float)  # overrides the datatype of x_data
    out["x_data_dtype"] = [int(x_data.dtype == torch.int64), int(x_rand.dtype == torch.float32)]
    out["x_ones"] = x_ones.tolist()
    out["x_np"] = x_np.tolist()
    out["x_rand_in_range"] = int(bool(((x_rand >= 0) & (x_rand < 1)).all()))

    shape = (2, 3,)
    rand_tensor = torch.rand(shape)
    ones_tensor = torch.ones(shape)
    zeros_tensor = torch.zeros(shape)
    out["shapes"] = [list(rand_tensor.shape), list(ones_tensor.shape), list(zeros_tensor.size())]

    tensor = torch.rand(3, 4)
    out["attrs"] = [list(tensor.shape), int(tensor.dtype == torch.float32), str(tensor.device)]
    if torch.accelerator.is_available():
        tensor = tensor.to(torch.accelerator.current_accelerator())
    out["cuda_matches_accelerator"] = int(torch.cuda.is_available() == torch.accelerator.is_available())

    tensor = torch.ones(4, 4)
    tensor[:, 1] = 0
    out["first_row"] = tensor[0].tolist()
    out["first_col"] = tensor[:, 0].tolist()
    out["last_col"] = tensor[..., -1].tolist()
    t1 = torch.cat([tensor, tensor, tensor], dim=1)
    out["cat_shape"] = list(t1.shape)

    tensor = torch.arange(16, dtype=torch.float32).reshape(4, 4) / 10
    y1 = tensor @ tensor.T
    y2 = tensor.matmul(tensor.T)
    y3 = torch.rand_like(y1)
    torch.matmul(tensor, tensor.T, out=y3)
    z1 = tensor * tensor
    z2 = tensor.mul(tensor)
    z3 = torch.rand_like(tensor)
    torch.mul(tensor, tensor, out=z3)
    out["matmul_equal"] = int(torch.equal(y1, y2) and torch.allclose(y1, y3))
    out["mul_equal"] = int(torch.equal(z1, z2) and torch.equal(z1, z3))
    out["y1"] = y1.tolist()

    agg = tensor.sum()
    agg_item = agg.item()
    out["agg"] = agg_item
    out["agg_type"] = type(agg_item).__name__
    tensor.add_(5)
    out["after_add_"] = tensor.sum().item()

    t = torch.ones(5)
    n = t.numpy()
    t.add_(1)
    out["bridge_t_to_n"] = n.tolist()
    n = np.ones(5)
    t = torch.from_numpy(n)
    np.add(n, 1, out=n)
    out["bridge_n_to_t"] = t.tolist()
    out["bridge_dtype"] = int(t.dtype == torch.float64)

    out["is_tensor"] = [int(torch.is_tensor(t)), int(torch.is_tensor(n))]
    out["numel"] = torch.numel(torch.zeros(2, 3, 4))
    x = torch.arange(12.).view(3, 4)
    out["top_level"] = [torch.sum(x).item(), torch.mean(x).item(), torch.max(x).item(),
                        torch.argmax(x).item(), torch.exp(torch.log(x + 1)).sum().item(),
                        torch.clamp(x, 2, 5).sum().item(), torch.sqrt(x).sum().item(),
                        torch.cumsum(x, dim=1)[:, -1].tolist(),
                        torch.transpose(x, 0, 1).shape[0], torch.squeeze(x.unsqueeze(0)).dim(),
                        torch.stack([x, x]).shape[0], torch.where(x > 5, x, torch.zeros_like(x)).sum().item()]
    values, indices = torch.topk(x.flatten(), 3)
    out["topk"] = [values.tolist(), indices.tolist()]
    s, order = torch.sort(torch.tensor([3., 1., 2.]), descending=True)
    out["sort"] = [s.tolist(), order.tolist()]
    out["einsum"] = torch.einsum("ij,kj->ik", x, x).tolist()
    out["dtypes"] = [int(torch.float == torch.float32), int(torch.long == torch.int64),
                     int(torch.double == torch.float64), int(torch.int == torch.int32),
                     int(torch.tensor([True]).dtype == torch.bool),
                     int(torch.get_default_dtype() == torch.float32)]
    out["long_sum"] = torch.tensor([1.7, 2.2]).long().sum().item()
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
