"""Which connections have their requests decrypted, and what each request is (cfg/requests.yaml)."""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from ..decode._distinct import per_distinct
from ._yamldoc import YamlDoc, expect_list, expect_mapping, expect_str, load_yaml
from .catalog import load_catalog, path_ids

CFG = resources.files("commpath") / "cfg"
TOP_KEYS = {"apiVersion", "kind", "version", "paths", "kinds"}
RULE_KEYS = {"kind", "paths", "url", "responder", "target", "title", "reference"}
OTHER = "other"


@functools.cache
def load_request_kinds(file: str | None = None) -> dict:
    """The validated rules: ``{"paths": [...], "kinds": [{kind, paths, url (compiled), responder, target,
    title, reference}, ...]}``; raises InputError naming file, line and key of the first problem."""
    if file is None:
        doc = load_yaml("commpath/cfg/requests.yaml", (CFG / "requests.yaml").read_text(encoding="utf-8"))
    else:
        doc = load_yaml(Path(file))
    return validate_request_kinds(doc)


def validate_request_kinds(doc: YamlDoc) -> dict:
    data = expect_mapping(doc, "", doc.data, TOP_KEYS)
    for key in ("paths", "kinds"):
        if key not in data:
            raise doc.error(key, "missing")
    known_paths = set(path_ids())
    roles = set(load_catalog()["roles"])
    chosen = [_path(doc, f"paths[{i}]", p, known_paths) for i, p in enumerate(expect_list(doc, "paths", data["paths"]))]
    kinds = []
    for i, entry in enumerate(expect_list(doc, "kinds", data["kinds"])):
        key = f"kinds[{i}]"
        r = expect_mapping(doc, key, entry, RULE_KEYS)
        for required in ("kind", "paths", "title", "reference"):
            if required not in r:
                raise doc.error(f"{key}.{required}", "missing")
        rule = {"kind": expect_str(doc, f"{key}.kind", r["kind"]), "title": expect_str(doc, f"{key}.title", r["title"]),
                "paths": [_path(doc, f"{key}.paths[{j}]", p, set(chosen))
                          for j, p in enumerate(expect_list(doc, f"{key}.paths", r["paths"]))],
                "url": None, "responder": None, "target": r.get("target")}
        if rule["kind"] == OTHER:
            raise doc.error(f"{key}.kind", f"{OTHER!r} is what no rule takes; name the kind")
        ref = expect_mapping(doc, f"{key}.reference", r["reference"], {"anchor", "quote"})
        rule["reference"] = {"anchor": expect_str(doc, f"{key}.reference.anchor", ref.get("anchor")),
                             "quote": expect_str(doc, f"{key}.reference.quote", ref.get("quote"))}
        if "url" in r:
            try:
                rule["url"] = re.compile(expect_str(doc, f"{key}.url", r["url"]))
            except re.error as exc:
                raise doc.error(f"{key}.url", f"not a regular expression: {exc}") from None
        if "responder" in r:
            rule["responder"] = [expect_str(doc, f"{key}.responder[{j}]", v)
                                 for j, v in enumerate(expect_list(doc, f"{key}.responder", r["responder"]))]
            for j, v in enumerate(rule["responder"]):
                if v not in roles:
                    raise doc.error(f"{key}.responder[{j}]", f"unknown role {v!r}")
        if rule["target"] not in (None, "responder"):
            raise doc.error(f"{key}.target", "expected 'responder' (or a url group named 'target')")
        kinds.append(rule)
    return {"version": data.get("version"), "paths": chosen, "kinds": kinds}


def _path(doc: YamlDoc, key: str, value, allowed: set[str]) -> str:
    pid = expect_str(doc, key, value)
    if pid not in allowed:
        raise doc.error(key, f"unknown or unchosen path id {pid!r}")
    return pid


def request_kinds() -> list[str]:
    """Every request kind, in the order of the rules, then ``other``."""
    kinds = []
    for rule in load_request_kinds()["kinds"]:
        if rule["kind"] not in kinds:
            kinds.append(rule["kind"])
    return [*kinds, OTHER]


def decrypted_connections(flows: pd.DataFrame) -> pd.DataFrame:
    """The TCP connections whose requests are read: those on the chosen paths (classified flows)."""
    chosen = load_request_kinds()["paths"]
    if flows.empty or "path" not in flows:
        return flows.iloc[:0]
    # on the categories themselves (a cast to text would make one string per flow)
    chosen_path = flows["path"].isin(chosen).to_numpy(bool)
    tcp = (flows["transport"] == "tcp").fillna(False).to_numpy(bool)
    return flows[chosen_path & tcp]


def label_requests(requests: pd.DataFrame, flows: pd.DataFrame) -> pd.DataFrame:
    """``requests`` with flow_path, request_kind and target filled from the rules and the connections."""
    out = requests.copy()
    if out.empty:
        return out
    f = flows.drop_duplicates("flow_id").set_index("flow_id")
    fid = out["flow_id"]
    path = fid.map(f["path"].astype("string")).astype("string")
    responder = fid.map(f["dst_role"].astype("string")).astype("string") if "dst_role" in f else pd.Series(pd.NA, index=out.index)
    ends = fid.map(f["dst_ip"].astype("string") + ":" + f["dst_port"].astype("string")).astype("string")
    url = pd.Series(per_distinct(out["path"].astype("string").fillna(""), lambda p: p.split("?", 1)[0]),
                    index=out.index, dtype="string")
    # the rules read the path, the responder's role and the URL: judged once per distinct triple (a
    # kubelet is asked the same few URLs over and over), then spread to the requests
    keys = pd.DataFrame({"path": path, "responder": responder.astype("string"), "url": url})
    group = keys.groupby(["path", "responder", "url"], dropna=False, sort=False).ngroup().to_numpy()
    distinct = keys.iloc[np.unique(group, return_index=True)[1]].reset_index(drop=True)
    kind, target, from_responder = _judged_requests(distinct)
    out["flow_path"] = path
    out["request_kind"] = pd.Series(kind.to_numpy()[group], index=out.index, dtype="string").fillna(OTHER)
    out["target"] = pd.Series(np.where(from_responder[group], ends.to_numpy(object), target.to_numpy(object)[group]),
                              index=out.index, dtype="string")
    kinds = request_kinds()
    out["request_kind"] = out["request_kind"].astype(pd.CategoricalDtype(kinds))
    out["flow_path"] = out["flow_path"].astype(pd.CategoricalDtype(sorted(set(path.dropna().unique())
                                                                         | set(load_request_kinds()["paths"]))))
    return out


def _judged_requests(keys: pd.DataFrame) -> tuple[pd.Series, pd.Series, np.ndarray]:
    """For each row of ``keys`` (path, responder, url): the request kind the first matching rule gives
    (NA: none), the target its URL names, and whether the target is the responder instead."""
    path, responder, url = keys["path"], keys["responder"], keys["url"]
    kind = pd.Series(pd.NA, index=keys.index, dtype="string")
    target = pd.Series(pd.NA, index=keys.index, dtype="string")
    from_responder = np.zeros(len(keys), bool)
    for rule in load_request_kinds()["kinds"]:
        todo = kind.isna() & path.isin(rule["paths"]).fillna(False)
        if rule["responder"] is not None:
            todo &= responder.isin(rule["responder"]).fillna(False)
        if not todo.any():
            continue
        if rule["url"] is not None:
            hit = url[todo].str.match(rule["url"].pattern).fillna(False)
            idx = hit[hit].index
            kind.loc[idx] = rule["kind"]
            if "target" in rule["url"].groupindex and len(idx):
                target.loc[idx] = url.loc[idx].str.extract(rule["url"].pattern)["target"].astype("string")
        else:
            idx = todo[todo].index
            kind.loc[idx] = rule["kind"]
        if rule["target"] == "responder":
            from_responder[idx.to_numpy()] = True
    return kind, target, from_responder


__all__ = ["OTHER", "decrypted_connections", "label_requests", "load_request_kinds", "request_kinds",
           "validate_request_kinds"]
