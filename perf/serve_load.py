"""Bounded loopback load test of `wte serve` against its FastAPI + PyTorch peer (perf/serve_peer_fastapi.py).

Servers are given as NAME=URL (--server, repeated); the LAST one is the reference the ratios are taken against (the
peer). For each load level every server is measured in turn (the order alternates from level to level, so a change in
the machine's load hits all of them alike): predict at concurrency 1, 8 and 32 (closed loop: each worker sends its
next request when the answer arrives; at most --requests requests and --max-seconds per level, after a warm-up), then
a mixed load: 8 predict workers while one client runs --edits edits back to back (exactly --edit-steps masked-RMSprop
steps each: a learning rate too small to fix the image, so neither server stops early; `wte serve` answers those 422
"not fixed" and keeps its weights, the peer edits in place).

For a `wte serve` (it answers GET /v1/model) the per-stage breakdown comes from its /metrics, read before and after
each level: mean decode time per request, mean queue wait, mean forward time per batch and mean batch size, the mean
time the server saw the request (Kestrel routing to the answer written) and, by difference with the client's mean
latency, the time outside the server's handler (client, loopback, HTTP parsing).

Prints JSON lines, then markdown tables (throughput, p50/p99 latency, edit latency, ratios; breakdown).
Usage: /usr/bin/python3 perf/serve_load.py --server "wte serve=http://127.0.0.1:18180" \
           --server "FastAPI+PyTorch=http://127.0.0.1:18190" IMAGE...
"""
import argparse, http.client, json, os, re, sys, threading, time, urllib.parse, uuid

# The client's worker threads share one interpreter lock; by default a thread that wants it may wait up to 5 ms for
# another to let go, and that wait would be counted as the server's latency. 0.2 ms keeps the client's own delay
# small (the same for every server measured).
sys.setswitchinterval(0.0002)


def request(url, method, path, body=None, headers=None):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
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
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)

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


def loadavg():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


METRIC = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def scrape(url):
    """Sums of the wte stage histograms and of the predict route's server-side duration."""
    status, data = request(url, "GET", "/metrics")
    if status != 200:
        return None
    out = {}
    for line in data.decode().splitlines():
        m = METRIC.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), m.group(2) or "", float(m.group(3))
        if name.startswith("http_request_duration_seconds") and 'endpoint="/v1/predict"' not in labels:
            continue
        if name.endswith("_sum") or name.endswith("_count"):
            out[name] = out.get(name, 0.0) + value
    return out


def cpu_seconds(pid):
    """CPU seconds (user + system) of a process, split into its inference threads (wte-predict, wte-cpu-*) and the rest."""
    if pid is None:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    infer = other = 0.0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except FileNotFoundError:
            continue   # a thread that ended meanwhile
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        t = (int(fields[11]) + int(fields[12])) / tick
        if comm == "wte-predict" or comm.startswith("wte-cpu-"): infer += t
        else: other += t
    return {"infer": infer, "other": other}


def cpu_use(before, after, client_before, client_after, requests):
    """CPU milliseconds per answered request: the server's inference threads, the server's other threads, the client."""
    if not requests:
        return {}
    out = {"client_cpu_ms": 1000 * (client_after - client_before) / requests}
    if before is not None and after is not None:
        out["server_cpu_ms"] = 1000 * (after["infer"] + after["other"] - before["infer"] - before["other"]) / requests
        out["infer_cpu_ms"] = 1000 * (after["infer"] - before["infer"]) / requests
    return out


def client_cpu():
    t = os.times()
    return t.user + t.system


def breakdown(before, after, client_mean_ms):
    if before is None or after is None:
        return None
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}

    def mean_ms(h):
        n = d.get(h + "_count", 0)
        return 1000 * d.get(h + "_sum", 0) / n if n else float("nan")
    batches = d.get("wte_predict_batch_size_count", 0)
    server = mean_ms("http_request_duration_seconds")
    return {"decode_ms": mean_ms("wte_predict_decode_seconds"), "queue_ms": mean_ms("wte_predict_queue_seconds"),
            "forward_ms_per_batch": mean_ms("wte_predict_forward_seconds"),
            "mean_batch": d.get("wte_predict_batch_size_sum", 0) / batches if batches else float("nan"),
            "server_ms": server, "outside_ms": client_mean_ms - server}


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
    return {"requests": len(lat), "errors": errors[0], "seconds": round(wall, 2), "throughput": len(lat) / wall,
            "p50_ms": 1000 * pct(lat, 0.5), "p99_ms": 1000 * pct(lat, 0.99),
            "mean_ms": 1000 * sum(lat) / len(lat) if lat else float("nan")}


def measure_predict(server, images, conc, args):
    name, url, is_wte, pid = server
    predict_load(url, images, conc, args.warmup_requests, args.warmup_seconds)
    before = scrape(url) if is_wte else None
    load = loadavg()
    cpu0, client0 = cpu_seconds(pid), client_cpu()
    r = predict_load(url, images, conc, args.requests, args.max_seconds)
    r.update(cpu_use(cpu0, cpu_seconds(pid), client0, client_cpu(), r["requests"]))
    r.update(server=name, load=f"predict c={conc}", loadavg=load)
    if is_wte:
        r["breakdown"] = breakdown(before, scrape(url), r["mean_ms"])
    return r


def measure_mixed(server, images, args):
    name, url, is_wte, _ = server
    stop = threading.Event()
    result = {}
    load = loadavg()
    t = threading.Thread(target=lambda: result.update(predict_load(url, images, 8, 10 ** 9, 10 ** 6, stop)))
    t.start()
    edit_lat = []
    extra = {"method": "random"} if is_wte else {}
    t_start = time.perf_counter()
    interval = args.mixed_seconds / args.edits   # edits spread over the window (back to back when they take longer)
    for e in range(args.edits):
        time.sleep(max(0.0, t_start + e * interval - time.perf_counter()))
        body, headers = multipart({"label": 0, "keep": 0.1, "lr": "1e-9", "max_steps": args.edit_steps, "seed": e, **extra}, images[e % len(images)])
        t0 = time.perf_counter()
        status, data = request(url, "POST", "/v1/edits", body, headers)
        edit_lat.append(time.perf_counter() - t0)
        assert status in (201, 422), (status, data[:200])
    time.sleep(max(0.0, t_start + args.mixed_seconds - time.perf_counter()))
    stop.set()
    t.join()
    result.update(server=name, load="predict c=8 + edits", loadavg=load, edits=args.edits,
                  edit_p50_ms=1000 * pct(edit_lat, 0.5), edit_max_ms=1000 * max(edit_lat))
    return result


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("images", nargs="+")
    ap.add_argument("--server", action="append", required=True, help="NAME=URL; the last one is the reference for the ratios")
    ap.add_argument("--requests", type=int, default=400, help="most requests per level and server")
    ap.add_argument("--max-seconds", type=float, default=30, help="most seconds per level and server")
    ap.add_argument("--warmup-requests", type=int, default=50)
    ap.add_argument("--warmup-seconds", type=float, default=5)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--edits", type=int, default=5, help="edits in the mixed load (0: no mixed load)")
    ap.add_argument("--edit-steps", type=int, default=20)
    ap.add_argument("--mixed-seconds", type=float, default=10, help="the mixed load lasts at least this long, its edits spread over it")
    ap.add_argument("--pid", action="append", default=[], help="NAME=PID of a server process: CPU time per request is reported")
    args = ap.parse_args()
    images = [open(p, "rb").read() for p in args.images]
    pids = dict(spec.split("=", 1) for spec in args.pid)
    servers = []
    for spec in args.server:
        name, url = spec.split("=", 1)
        status, _ = request(url, "GET", "/v1/model")
        servers.append((name, url, status == 200, pids.get(name)))
    rows = {s[0]: [] for s in servers}
    levels = [int(c) for c in args.concurrency.split(",")] + (["mixed"] if args.edits > 0 else [])
    for li, level in enumerate(levels):
        order = servers if li % 2 == 0 else servers[::-1]
        for server in order:
            r = measure_predict(server, images, level, args) if level != "mixed" else measure_mixed(server, images, args)
            print(json.dumps(r), flush=True)
            rows[server[0]].append(r)
    ref = servers[-1][0]
    print()
    print(f"| load | server | load avg | req/s | p50 ms | p99 ms | edit p50 ms | req/s ratio vs {ref} | p99 ratio ({ref}/this) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for i in range(len(levels)):
        for name, _, _, _ in servers:
            r, p = rows[name][i], rows[ref][i]
            mine = name != ref
            ratio = f"{r['throughput'] / p['throughput']:.2f}x" if mine else ""
            p99r = f"{p['p99_ms'] / r['p99_ms']:.2f}x" if mine else ""
            edit = f"{r['edit_p50_ms']:.0f}" if "edit_p50_ms" in r else ""
            print(f"| {r['load']} | {name} | {r['loadavg']:.1f} | {r['throughput']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {edit} | {ratio} | {p99r} |")
    stages = [(rows[name][i]["load"], name, rows[name][i]["breakdown"]) for i in range(len(levels)) for name, _, _, _ in servers
              if rows[name][i].get("breakdown")]
    if stages:
        print()
        print("Where a `wte serve` request's time goes (means over the level; ms):")
        print()
        print("| load | server | client mean | outside the handler | in the server | decode | queue wait | forward per batch | mean batch |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
        for load, name, b in stages:
            client = b["server_ms"] + b["outside_ms"]
            print(f"| {load} | {name} | {client:.2f} | {b['outside_ms']:.2f} | {b['server_ms']:.2f} | {b['decode_ms']:.2f} | {b['queue_ms']:.2f} | {b['forward_ms_per_batch']:.2f} | {b['mean_batch']:.2f} |")
    cpu = [(rows[name][i]["load"], name, rows[name][i]) for i in range(len(levels)) for name, _, _, _ in servers if "server_cpu_ms" in rows[name][i]]
    if cpu:
        print()
        print("CPU time per answered request (ms; from /proc, so less sensitive to the machine's load than wall time):")
        print()
        print("| load | server | server, all threads | of which inference threads | server, other threads | client |")
        print("|---|---|---:|---:|---:|---:|")
        for load, name, r in cpu:
            print(f"| {load} | {name} | {r['server_cpu_ms']:.3f} | {r['infer_cpu_ms']:.3f} | {r['server_cpu_ms'] - r['infer_cpu_ms']:.3f} | {r['client_cpu_ms']:.3f} |")


if __name__ == "__main__":
    main()
