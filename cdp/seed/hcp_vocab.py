"""The doctors' demo: meetings, quizzes tagged by knowledge dimension, catalogue, territories."""

from __future__ import annotations

from typing import NamedTuple

from cdp.seed import vocab

CITY_TIERS = {"一线": 1, "新一线": 2, "二线": 3, "三线": 4}
# The north rep's territory; the south rep has the other demo cities.
NORTH = {"北京", "天津", "济南", "青岛", "郑州", "洛阳", "西安", "上海", "南京", "苏州", "杭州",
         "合肥"}  # fmt: skip
CARDIO = ("心内科", "全科医学科", "老年医学科")
DIABETES = ("内分泌科", "全科医学科", "老年医学科")
CATALOGUE = (
    ("BOOK-HTN-2024", "《中国高血压防治指南（2024 年修订版）》", "book", 60, True),
    ("JOUR-CVD-1Y", "《中华心血管病杂志》电子版年度订阅", "journal", 100, True),
    ("CONF-CHC", "中国心脏大会线上注册", "conference", 300, True),
    ("DB-CDS-3M", "临床决策支持数据库 3 个月", "database", 500, False),  # awaits the manager
)


class DemoMeeting(NamedTuple):
    topic: str
    kind: str
    product: str  # the brand the course material is about (Rx: for doctors only)
    area: str
    campaign: str  # ``{year}``: the meeting's
    day: int  # from today (Asia/Shanghai); negative: held already
    at: str  # local start
    minutes: int  # length
    min_minutes: int  # for academic points
    departments: tuple[str, ...]  # whom the reps invite
    quiz: str  # QUIZZES key
    invite: int  # doctors invited at most


CARDIO_CAMPAIGN = "心血管用药教育 {year}"
UPCOMING = DemoMeeting(vocab.MEETINGS[0][1], "webinar", "立普妥", "心血管", CARDIO_CAMPAIGN,
                       10, "19:30", 90, 40, CARDIO, "lipids", 24)  # fmt: skip
PAST = (
    DemoMeeting(vocab.MEETINGS[3][1], "cme_course", "络活喜", "心血管", CARDIO_CAMPAIGN,
                -56, "19:30", 90, 40, CARDIO, "hypertension", 45),
    DemoMeeting(vocab.MEETINGS[1][1], "webinar", "格华止", "糖尿病", "糖尿病综合管理 {year}",
                -35, "19:00", 90, 40, DIABETES, "diabetes", 40),
    DemoMeeting(vocab.HCP_ARTICLES[3][1], "department_meeting", "络活喜", "心血管",
                CARDIO_CAMPAIGN, -21, "12:30", 60, 30, CARDIO, "combination", 45),
)  # fmt: skip


def _q(qid: str, text: str, options: list[str], answer: list[int], *dimensions: str) -> dict:
    return {"id": qid, "text": text, "options": options, "answer": answer,
            "dimensions": list(dimensions), "weight": 1}  # fmt: skip


QUIZZES: dict[str, list[dict]] = {
    "hypertension": [
        _q("q1", "未使用降压药时，诊室血压达到多少可诊断为高血压？",
           ["≥130/80 mmHg", "≥140/90 mmHg", "≥160/100 mmHg"], [1], "diagnosis"),
        _q("q2", "怀疑白大衣高血压时，首选哪项检查？",
           ["动态血压或家庭血压监测", "心脏彩超", "颈动脉超声"], [0], "diagnosis"),
        _q("q3", "一般高血压患者的降压目标是？",
           ["<150/90 mmHg", "<140/90 mmHg，能耐受者降至<130/80 mmHg", "<120/70 mmHg"], [1],
           "treatment"),
        _q("q4", "高血压合并稳定型心绞痛，优先考虑哪些药物？（多选）",
           ["β受体阻滞剂", "α受体阻滞剂", "长效二氢吡啶类CCB"], [0, 2], "drug_class_choice"),
        _q("q5", "苯磺酸氨氯地平片（络活喜）属于哪类降压药？",
           ["二氢吡啶类CCB", "ACEI", "ARB"], [0], "brand_choice", "drug_class_choice"),
        _q("q6", "苯磺酸氨氯地平片的常用起始剂量是？",
           ["5 mg 每日一次", "10 mg 每日两次", "2.5 mg 每日三次"], [0], "product_usage"),
        _q("q7", "患者漏服一次氨氯地平，应如何处理？",
           ["下次服用双倍剂量", "想起时尽快补服，临近下次服药则跳过", "停药一天再继续"], [1],
           "product_usage"),
    ],
    "combination": [
        _q("q1", "高血压合并冠心病患者，血压应控制在？",
           ["<150/90 mmHg", "<140/90 mmHg，耐受者<130/80 mmHg", "<110/60 mmHg"], [1],
           "treatment"),
        _q("q2", "单药控制不佳时，推荐的联合方案是？",
           ["CCB + ARB/ACEI", "ACEI + ARB", "两种CCB"], [0], "drug_class_choice", "treatment"),
        _q("q3", "提示冠心病心肌缺血的检查结果是？",
           ["运动负荷试验ST段压低", "窦性心律", "血钾正常"], [0], "diagnosis"),
        _q("q4", "氨氯地平与哪种药物合用需关注踝部水肿？",
           ["与其他血管扩张剂合用", "与他汀合用", "与阿司匹林合用"], [0], "product_usage"),
        _q("q5", "氨氯地平的最大推荐日剂量是？", ["5 mg", "10 mg", "20 mg"], [1], "product_usage"),
        _q("q6", "长效CCB中，半衰期最长、每日一次给药的是？",
           ["苯磺酸氨氯地平", "硝苯地平普通片", "维拉帕米普通片"], [0], "brand_choice"),
    ],
    "diabetes": [
        _q("q1", "有典型症状时，空腹血糖多少可诊断糖尿病？",
           ["≥6.1 mmol/L", "≥7.0 mmol/L", "≥11.1 mmol/L"], [1], "diagnosis"),
        _q("q2", "HbA1c 用于诊断糖尿病的切点是？", ["≥6.0%", "≥6.5%", "≥7.5%"], [1], "diagnosis"),
        _q("q3", "2 型糖尿病无禁忌时的一线用药是？", ["二甲双胍", "胰岛素", "格列美脲"], [0],
           "treatment", "drug_class_choice"),
        _q("q4", "合并心衰或慢性肾病的 2 型糖尿病，优先加用？",
           ["SGLT2 抑制剂", "磺脲类", "α-糖苷酶抑制剂"], [0], "drug_class_choice"),
        _q("q5", "格华止的通用名是？", ["盐酸二甲双胍片", "阿卡波糖片", "达格列净片"], [0],
           "brand_choice"),
        _q("q6", "为减少二甲双胍的胃肠道反应，宜？",
           ["随餐或餐后服用，小剂量起始", "空腹顿服", "睡前一次大剂量"], [0], "product_usage"),
        _q("q7", "eGFR 低于多少 ml/min/1.73m² 时禁用二甲双胍？", ["60", "45", "30"], [2],
           "product_usage"),
    ],
    "lipids": [
        _q("q1", "ASCVD 一级预防中，评估总体风险首先依据？",
           ["LDL-C 与危险因素分层", "甘油三酯", "HDL-C"], [0], "diagnosis"),
        _q("q2", "降低 LDL-C 的首选药物类别是？", ["他汀类", "贝特类", "烟酸类"], [0],
           "drug_class_choice", "treatment"),
        _q("q3", "阿托伐他汀（立普妥）属于？", ["中等或高强度他汀", "贝特类", "PCSK9 抑制剂"], [0],
           "brand_choice"),
        _q("q4", "阿托伐他汀的服药时间要求是？", ["一天中任意固定时间", "必须睡前", "必须空腹"],
           [0], "product_usage"),
        _q("q5", "服用他汀后出现不明原因肌痛，应？",
           ["检测肌酸激酶并评估", "加倍剂量", "不予处理"], [0], "product_usage"),
    ],
}  # fmt: skip
