"""BM25's ``"text"`` setting 2 checked: what it leaves alone, and its CJK query terms.

1. With ``--data`` (the LoCoMo JSON): every turn, image caption and question is encoded as a
   document and as a query under ``text`` 1 and 2, and the texts whose vectors differ are
   counted (0 means LoCoMo recall under 2 is LoCoMo recall under 1).
2. A keyword-only search (``dense_weight=graph_weight=entity_weight=0``) over a small Chinese,
   Japanese and Korean corpus, with ``text`` 2's documents (bigrams and characters) and its
   queries made two ways: ``bigrams`` (runs of two or more characters as bigrams only, a
   one-character run as it is: what 2 does) and ``characters too`` (queries as documents).
   Per way: the queries whose memory is first, the queries whose memory is in the top 5, and
   the other memories returned (k=5; a memory that shares any term with the query is a hit).

    python benchmarks/bm25_text_settings.py --data ../shared/data/locomo/locomo_dev.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from memos_core import MemOS, MemOSConfig
from memos_core.config import RetrievalConfig
from memos_core.index import sparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import machine_info, markdown_machine  # noqa: E402

DOCS = [
    "我养了一只猫", "他的狗很可爱", "我每天早上喝茶", "她买了一本书", "昨天下雨了",
    "我昨天在北京吃了烤鸭", "我的猫很喜欢吃鱼", "我们下个月去上海旅游", "我妹妹在大学学习医学",
    "这家咖啡店的蛋糕很好吃", "我的电脑坏了需要修理", "他每周末都去公园跑步", "我明天要去医院看病",
    "我们家有三个人", "这本小说的故事很有意思", "我喜欢听古典音乐", "他的工作是软件工程师",
    "今天的天气很好", "我朋友下周结婚", "我的生日是五月七日",
    "うちの猫は白い", "本を読みました", "東京で寿司を食べました", "週末に京都へ行きます",
    "私の妹は大学生です", "毎朝コーヒーを飲みます", "昨日は雨でした", "新しい車を買いました",
    "나는 책을 읽었다", "우리 집은 서울에 있다", "물을 마셨다", "새 차를 샀다",
    "나는 매일 아침 커피를 마신다", "주말에 부산에 갔다", "우리 고양이는 생선을 좋아한다",
    "내 동생은 대학생이다", "어제 비가 많이 왔다", "친구가 다음 주에 결혼한다",
]
#: (query, index of the memory it asks for): one-character words, words, phrases
QUERIES = [
    ("猫", 0), ("狗", 1), ("茶", 2), ("书", 3), ("雨", 4), ("猫", 20), ("本", 21),
    ("책", 28), ("집", 29), ("물", 30), ("차", 31),
    ("北京", 5), ("烤鸭", 5), ("上海", 7), ("医学", 8), ("蛋糕", 9), ("电脑", 10), ("公园", 11),
    ("医院", 12), ("小说", 14), ("音乐", 15), ("工程师", 16), ("天气", 17), ("结婚", 18),
    ("生日", 19), ("寿司", 22), ("京都", 23), ("大学生", 24), ("コーヒー", 25), ("서울", 29),
    ("커피", 32), ("부산", 33), ("고양이", 34), ("대학생", 35), ("결혼", 37),
    ("猫喜欢吃什么", 6), ("我的生日是哪天", 19), ("谁在北京吃烤鸭", 5), ("妹妹学什么", 8),
    ("去上海旅游", 7), ("咖啡店的蛋糕", 9), ("新しい車", 27), ("コーヒーを飲む", 25),
    ("서울에 있는 집", 29), ("고양이가 좋아하는 것", 34), ("커피를 마시다", 32),
]


def locomo_texts(path: Path) -> list[str]:
    texts: list[str] = []
    for sample in json.loads(path.read_text()):
        for key, turns in sample["conversation"].items():
            if key.startswith("session_") and isinstance(turns, list):
                texts += [t["text"] for t in turns]
                texts += [t["blip_caption"] for t in turns if t.get("blip_caption")]
        texts += [qa["question"] for qa in sample["qa"]]
    return texts


def differing(texts: list[str]) -> int:
    one, two = sparse.Bm25Encoder(text=1), sparse.Bm25Encoder(text=2)
    return sum(one.encode_document(t) != two.encode_document(t)
               or one.encode_query(t) != two.encode_query(t) for t in texts)


def keyword_search(query_prepare: object, data_dir: Path) -> tuple[int, int, int]:
    saved = sparse._PREPARE[2]
    sparse._PREPARE[2] = (saved[0], query_prepare)  # type: ignore[assignment]
    try:
        rc = RetrievalConfig(dense_weight=0.0, graph_weight=0.0, entity_weight=0.0)
        with MemOS(data_dir, config=MemOSConfig(show_progress=False, retrieval=rc)) as mos:
            ids = {mos.add(d, user_id="u").id: i for i, d in enumerate(DOCS)}
            first = top5 = others = 0
            for query, want in QUERIES:
                got = [ids[h.id] for h in mos.search(query, user_id="u", k=5,
                                                     record_usage=False)]
                first += bool(got) and got[0] == want
                top5 += want in got
                others += sum(g != want for g in got)
    finally:
        sparse._PREPARE[2] = saved
    return first, top5, others


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, help="LoCoMo JSON (locomo10.json format)")
    args = p.parse_args()
    print(markdown_machine(machine_info()))
    print(f"load average {os.getloadavg()[0]:.1f}\n")
    if args.data:
        texts = locomo_texts(args.data)
        print(f"LoCoMo: {len(texts)} texts, {sum(not t.isascii() for t in texts)} not ASCII; "
              f"vectors differing between text 1 and 2: {differing(texts)}\n")
    print(f"| CJK queries ({len(QUERIES)}) | memory first | in top 5 | other memories returned |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, prepare in (("bigrams (text 2)", sparse._prepare_query),
                              ("characters too", sparse._prepare_document)):
            first, top5, others = keyword_search(prepare, Path(tmp) / name.split()[0])
            print(f"| {name} | {first} | {top5} | {others} |")


if __name__ == "__main__":
    main()
