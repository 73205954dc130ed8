import collections, sys, re
raw = sys.argv[1]; needle = sys.argv[2] if len(sys.argv) > 2 else None
proc = collections.Counter(); incl = collections.Counter(); total = 0; idle = 0
for line in open(raw):
    stack, _, n = line.rstrip().rpartition(" ")
    if not n.isdigit(): continue
    n = int(n); frames = stack.split(";")
    p = frames[0][:60]; proc[p] += n
    if "streamlit run" not in frames[0] or (len(frames) > 1 and frames[1].startswith("process ")):
        if len(frames) > 1 and frames[1].startswith("process "): proc["workers"] += n
        continue
    leaf = frames[-1]
    if any(k in leaf for k in ("Condition.wait", "select (selectors", "_write_to_self", "sleep", "Event.wait")): idle += n; continue
    total += n
    seen = set()
    for f in frames[1:]:
        key = re.sub(r":\d+\)", ")", f) if not needle else f
        if key in seen: continue
        seen.add(key)
        if any(s in f for s in ("app_pages/", "soae_app/", "soae_core/", "plotly", "streamlit/elements", "pandas", "PIL", "torch/nn", "pyarrow", "marshall", "importlib")):
            incl[key] += n
print(proc.most_common(5)); print("server busy samples", total, "idle", idle)
for k, v in incl.most_common(60): print(f"{v/total:6.3f} {k[:150]}")
