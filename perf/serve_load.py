"""Bounded loopback load test of `wte serve` against its FastAPI + PyTorch peer (perf/serve_peer_fastapi.py).

For each server: predict at concurrency 1, 8 and 32 (closed loop, each worker sends its next request when the answer
arrives; N requests per level, at most --max-seconds), then a mixed load: 8 predict workers while one client runs
--edits edits back to back (exactly --edit-steps masked-RMSprop steps each: a learning rate too small to fix the image,
so neither server stops early; `wte serve` answers those 422 "not fixed" and keeps its weights, the peer edits in place).
Prints JSON lines and a markdown table (throughput, p50/p99 latency, edit latency, ratios).
Usage: /usr/bin/python3 perf/serve_load.py --ours http://127.0.0.1:18180 --peer http://127.0.0.1:18190 IMAGE...
"""
import argparse, http.client, json, threading, time, urllib.parse, uuid


def request(url, method, path, body=None, headers=None):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, data
    finally:
        conn.close()


class Client:
    """One keep-alive connection per worker (as a real client pool would)."""
    def __init__(self, url):
        u = urllib.parse.urlparse(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)

    def post(self, path, body, headers):
        self.conn.request("POST", path, body=body, headers=headers)
        r = self.conn.getresponse()
        return r.status, r.read()


def multipart(fields, image):
    b = uuid.uuid4().hex
    parts = []
    for k, v in fields.items():
        parts.append(f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    parts.append(f'--{b}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n'.encode() + image + b"\r\n")
    parts.append(f"--{b}--\r\n".encode())
    return b"".join(parts), {"Content-Type": f"multipart/form-data; boundary={b}"}


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] if xs else float("nan")


def predict_load(url, images, concurrency, total, max_seconds, stop_event=None):
    lat, lock, count = [], threading.Lock(), [0]
    deadline = time.perf_counter() + max_seconds
    errors = [0]

    def worker(w):
        c = Client(url)
        i = w
        while True:
            with lock:
                if count[0] >= total or time.perf_counter() > deadline or (stop_event is not None and stop_event.is_set()):
                    return
                count[0] += 1
            t = time.perf_counter()
            status, _ = c.post("/v1/predict?top_k=5", images[i % len(images)], {"Content-Type": "image/png"})
            dt = time.perf_counter() - t
            with lock:
                if status == 200: lat.append(dt)
                else: errors[0] += 1
            i += concurrency

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for t in threads: t.start()
    for t in threads: t.join()
    wall = time.perf_counter() - t0
    return {"requests": len(lat), "errors": errors[0], "seconds": wall, "throughput": len(lat) / wall,
            "p50_ms": 1000 * pct(lat, 0.5), "p99_ms": 1000 * pct(lat, 0.99)}


def run(name, url, images, args, extra_edit_fields):
    rows = []
    for conc in (1, 8, 32):
        predict_load(url, images, conc, min(50, args.requests), 10)   # warm-up
        r = predict_load(url, images, conc, args.requests, args.max_seconds)
        r.update(server=name, load=f"predict c={conc}")
        print(json.dumps(r), flush=True)
        rows.append(r)
    # Mixed: 8 predictors while one client edits back to back.
    stop = threading.Event()
    result = {}
    t = threading.Thread(target=lambda: result.update(predict_load(url, images, 8, 10 ** 9, args.max_seconds * 4, stop)))
    t.start()
    edit_lat = []
    for e in range(args.edits):
        body, headers = multipart({"label": 0, "keep": 0.1, "lr": "1e-9", "max_steps": args.edit_steps, "seed": e, **extra_edit_fields}, images[e % len(images)])
        t0 = time.perf_counter()
        status, data = request(url, "POST", "/v1/edits", body, headers)
        edit_lat.append(time.perf_counter() - t0)
        assert status in (201, 422), (status, data[:200])
    stop.set()
    t.join()
    result.update(server=name, load=f"predict c=8 + edits", edits=args.edits, edit_p50_ms=1000 * pct(edit_lat, 0.5), edit_max_ms=1000 * max(edit_lat))
    print(json.dumps(result), flush=True)
    rows.append(result)
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+")
    ap.add_argument("--ours", required=True)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--max-seconds", type=float, default=30)
    ap.add_argument("--edits", type=int, default=5)
    ap.add_argument("--edit-steps", type=int, default=20)
    args = ap.parse_args()
    images = [open(p, "rb").read() for p in args.images]
    ours = run("wte serve", args.ours, images, args, {"method": "random"})
    peer = run("FastAPI+PyTorch", args.peer, images, args, {})
    print()
    print("| load | server | req/s | p50 ms | p99 ms | edit p50 ms | req/s ratio | p99 ratio (peer/ours) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for o, p in zip(ours, peer):
        for r in (o, p):
            ratio = f"{o['throughput'] / p['throughput']:.2f}x" if r is o else ""
            p99r = f"{p['p99_ms'] / o['p99_ms']:.2f}x" if r is o else ""
            edit = f"{r['edit_p50_ms']:.0f}" if "edit_p50_ms" in r else ""
            print(f"| {r['load']} | {r['server']} | {r['throughput']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {edit} | {ratio} | {p99r} |")


if __name__ == "__main__":
    main()
