"""The peer of `wte serve` for perf/serve_load.py: FastAPI + uvicorn + PyTorch (Debian python3-fastapi, python3-uvicorn,
python3-torch) serving the same safetensors ViT. POST /v1/predict takes a raw PNG (8-bit gray or RGB, already the model's
size: the Fashion-MNIST benchmark images) and answers the top-5; POST /v1/edits runs the reference-style edit loop
(masked RMSprop on the fc1 rows / fc2 columns of blocks 7-9 of a random keep-fraction mask, stop when every image is
right and CE <= 0.01) in place under a lock. One forward per request, no batching: what a user would write.

Usage: /usr/bin/python3 perf/serve_peer_fastapi.py MODEL.safetensors --port 18190 --threads 2
"""
import argparse, json, struct, threading, time, zlib

import numpy as np
import torch
import torch.nn.functional as F
from fastapi import FastAPI, File, Form, Request, UploadFile
import uvicorn


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    body = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        assert info["dtype"] == "F32", name
        s, e = info["data_offsets"]
        tensors[name] = torch.from_numpy(np.frombuffer(body[s:e], dtype="<f4").reshape(info["shape"]).copy())
    return meta, tensors


def decode_png(data):
    """8-bit non-interlaced gray/RGB PNG -> uint8 array [H, W, C] (enough for the benchmark images; no PIL on this machine)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, w = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, chunk = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and interlace == 0 and color in (0, 2), "only 8-bit gray/RGB PNGs"
            ch = 1 if color == 0 else 3
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = w * ch
    out = bytearray(h * stride)
    prev = bytearray(stride)
    for y in range(h):
        f = raw[y * (stride + 1)]
        line = raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)]
        if f == 0:   # filter None: the bytes as they are (perf/make_vit_base.py writes only these)
            cur = bytearray(line)
            out[y * stride:(y + 1) * stride] = cur
            prev = cur
            continue
        cur = bytearray(stride)
        for x in range(stride):   # plain ints: numpy scalars would make this loop 20x slower
            a = cur[x - ch] if x >= ch else 0
            b = prev[x]
            c = prev[x - ch] if x >= ch else 0
            if f == 0: p = 0
            elif f == 1: p = a
            elif f == 2: p = b
            elif f == 3: p = (a + b) >> 1
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + p) & 255
        out[y * stride:(y + 1) * stride] = cur
        prev = cur
    return np.frombuffer(out, dtype=np.uint8).reshape(h, w, ch)


class Model:
    def __init__(self, path):
        meta, self.P = read_safetensors(path)
        self.cfg = json.loads(meta["wte.config"])
        pre = json.loads(meta["wte.preprocessing"])
        self.mean = torch.tensor(pre["mean"]).view(-1, 1, 1)
        self.std = torch.tensor(pre["std"]).view(-1, 1, 1)
        self.labels = json.loads(meta.get("wte.labels", "[]"))
        self.lock = threading.Lock()

    def pixels(self, png):
        img = torch.from_numpy(decode_png(png)).permute(2, 0, 1).float() / 255.0
        c = self.cfg
        if img.shape[0] != c["in_chans"]:
            img = img.mean(0, keepdim=True) if c["in_chans"] == 1 else img.expand(3, -1, -1)
        assert img.shape[1] == img.shape[2] == c["image_size"], "the peer takes images already at the model's size"
        return ((img - self.mean) / self.std).unsqueeze(0)

    def forward(self, x):
        P, c = self.P, self.cfg
        D, heads, eps, p = c["embed_dim"], c["num_heads"], c["ln_eps"], c["patch_size"]
        hd, B = D // heads, x.shape[0]
        t = F.conv2d(x, P["patch_embed.proj.weight"], P["patch_embed.proj.bias"], stride=p).flatten(2).transpose(1, 2)
        t = torch.cat([P["cls_token"].expand(B, -1, -1), t], dim=1) + P["pos_embed"]
        N = t.shape[1]
        for i in range(c["depth"]):
            b = "blocks.%d." % i
            h = F.layer_norm(t, (D,), P[b + "norm1.weight"], P[b + "norm1.bias"], eps)
            qkv = F.linear(h, P[b + "attn.qkv.weight"], P.get(b + "attn.qkv.bias")).reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)
            a = torch.softmax((qkv[0] @ qkv[1].transpose(-2, -1)) * hd ** -0.5, dim=-1)
            t = t + F.linear((a @ qkv[2]).transpose(1, 2).reshape(B, N, D), P[b + "attn.proj.weight"], P[b + "attn.proj.bias"])
            h = F.layer_norm(t, (D,), P[b + "norm2.weight"], P[b + "norm2.bias"], eps)
            t = t + F.linear(F.gelu(F.linear(h, P[b + "mlp.fc1.weight"], P[b + "mlp.fc1.bias"])), P[b + "mlp.fc2.weight"], P[b + "mlp.fc2.bias"])
        t = F.layer_norm(t, (D,), P["norm.weight"], P["norm.bias"], eps)
        return F.linear(t[:, 0], P["head.weight"], P["head.bias"])

    def edit(self, x, label, keep, lr, max_steps, seed):
        """The reference's loop: masked RMSprop on blocks 7-9's MLP weights until fixed (CE <= 0.01) or max_steps."""
        names = ["blocks.%d.mlp.fc%d.weight" % (b, k) for b in (7, 8, 9) for k in (1, 2)]
        g = torch.Generator().manual_seed(seed)
        with self.lock:
            params = [self.P[n].requires_grad_(True) for n in names]
            masks = []
            for n, w in zip(names, params):
                hidden = w.shape[0] if "fc1" in n else w.shape[1]
                m = (torch.rand(hidden, generator=g) < keep).float()
                masks.append(m.view(-1, 1) if "fc1" in n else m.view(1, -1))
            opt = torch.optim.RMSprop(params, lr=lr, alpha=0.99, eps=1e-8)
            y = torch.tensor([label] * x.shape[0])
            steps = 0
            for steps in range(max_steps + 1):
                logits = self.forward(x)
                loss = F.cross_entropy(logits, y)
                if (logits.argmax(1) == y).all() and loss.item() <= 0.01 or steps == max_steps:
                    break
                opt.zero_grad()
                loss.backward()
                for w, m in zip(params, masks):
                    w.grad.mul_(m)
                opt.step()
            for w in params:
                w.requires_grad_(False)
                w.grad = None
            return {"success": bool((logits.argmax(1) == y).all()), "steps": steps, "final_loss": loss.item()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--port", type=int, default=18190)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = Model(args.model)
    app = FastAPI()

    @app.get("/healthz")
    def healthz():
        return {"status": "ok"}

    @app.post("/v1/predict")
    async def predict(request: Request, top_k: int = 5):
        x = model.pixels(await request.body())
        with torch.no_grad():
            p = torch.softmax(model.forward(x)[0], 0)
        v, i = p.topk(top_k)
        return {"top": [{"index": int(k), "label": model.labels[int(k)] if model.labels else str(int(k)), "prob": float(q)} for q, k in zip(v, i)]}

    @app.post("/v1/edits", status_code=201)
    def edits(image: UploadFile = File(...), label: int = Form(...), keep: float = Form(0.1), lr: float = Form(2e-5),
              max_steps: int = Form(100), seed: int = Form(0)):
        x = model.pixels(image.file.read())
        t = time.perf_counter()
        r = model.edit(x, label, keep, lr, max_steps, seed)
        r["wall_ms"] = (time.perf_counter() - t) * 1000
        return {"record": r}

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
