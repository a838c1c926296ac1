"""Vocabularies the demo generator draws from: names, cities, hospitals, pharmacies, drugs."""

from __future__ import annotations

from datetime import timedelta, timezone
from itertools import accumulate
from random import Random
from typing import NamedTuple

WINDOW_DAYS = 365  # the demo history: a year up to now
CST = timezone(timedelta(hours=8), "Asia/Shanghai")  # China has one zone and no DST

# The 100 commonest surnames with their approximate share (per cent) in the 2020 census.
SURNAMES: tuple[tuple[str, float], ...] = (
    ("王", 7.1), ("李", 7.0), ("张", 6.7), ("刘", 5.4), ("陈", 4.5), ("杨", 3.1), ("黄", 2.2),
    ("赵", 2.0), ("吴", 1.9), ("周", 1.9), ("徐", 1.3), ("孙", 1.2), ("马", 1.2), ("朱", 1.1),
    ("胡", 1.0), ("郭", 1.0), ("何", 0.9), ("高", 0.9), ("林", 0.9), ("罗", 0.8), ("郑", 0.8),
    ("梁", 0.7), ("谢", 0.6), ("宋", 0.6), ("唐", 0.6), ("许", 0.5), ("韩", 0.5), ("冯", 0.5),
    ("邓", 0.5), ("曹", 0.5), ("彭", 0.45), ("曾", 0.45), ("肖", 0.45), ("田", 0.43),
    ("董", 0.42), ("袁", 0.4), ("潘", 0.4), ("于", 0.39), ("蒋", 0.38), ("蔡", 0.37),
    ("余", 0.36), ("杜", 0.35), ("叶", 0.34), ("程", 0.34), ("苏", 0.33), ("魏", 0.32),
    ("吕", 0.31), ("丁", 0.3), ("任", 0.3), ("沈", 0.29), ("姚", 0.28), ("卢", 0.28),
    ("姜", 0.27), ("崔", 0.26), ("钟", 0.26), ("谭", 0.25), ("陆", 0.24), ("汪", 0.24),
    ("范", 0.23), ("金", 0.23), ("石", 0.23), ("廖", 0.22), ("贾", 0.22), ("夏", 0.21),
    ("韦", 0.21), ("付", 0.2), ("方", 0.2), ("白", 0.2), ("邹", 0.19), ("孟", 0.19),
    ("熊", 0.19), ("秦", 0.18), ("邱", 0.18), ("江", 0.18), ("尹", 0.17), ("薛", 0.17),
    ("闫", 0.16), ("段", 0.16), ("雷", 0.16), ("侯", 0.15), ("龙", 0.15), ("史", 0.15),
    ("陶", 0.14), ("黎", 0.14), ("贺", 0.14), ("顾", 0.13), ("毛", 0.13), ("郝", 0.13),
    ("龚", 0.12), ("邵", 0.12), ("万", 0.12), ("钱", 0.12), ("严", 0.11), ("覃", 0.11),
    ("武", 0.11), ("戴", 0.11), ("莫", 0.1), ("孔", 0.1), ("向", 0.1), ("汤", 0.1),
)  # fmt: skip

GIVEN_MALE = (
    "伟强磊军勇杰涛斌超明刚平辉鹏华飞鑫波宇浩凯健俊帆旭宁龙林阳建国志文博晨昊然轩泽睿天云海东峰"
)
GIVEN_FEMALE = (
    "芳娜敏静丽艳燕娟霞秀玲桂英红梅琳雪婷倩颖佳欣怡晶蕾薇璐萍慧琪悦诗雨涵萱思嘉晓月冰洁丹莉"
)
GIVEN_ANY = "子一乐安心可书若文嘉晓俊"
_SURNAME_NAMES = [surname for surname, _ in SURNAMES]
_SURNAME_CUM = list(accumulate(share for _, share in SURNAMES))


def full_name(rng: Random, gender: str, old: bool) -> str:
    """A Chinese name: a weighted common surname and one or two given-name characters."""
    surname = rng.choices(_SURNAME_NAMES, cum_weights=_SURNAME_CUM)[0]
    pool = GIVEN_MALE if gender == "male" else GIVEN_FEMALE
    given = rng.choice(pool)
    # Single-character given names were commoner among older generations.
    if rng.random() >= (0.35 if old else 0.12):
        given += rng.choice(pool if rng.random() < 0.8 else GIVEN_ANY)
    return surname + given


class City(NamedTuple):
    name: str
    code: str  # used in store codes
    tier: str
    weight: float  # share of the demo population
    province: str  # two-digit administrative code, the start of a licence number


CITIES: tuple[City, ...] = (
    City("北京", "BJ", "一线", 9.0, "11"),
    City("上海", "SH", "一线", 9.0, "31"),
    City("广州", "GZ", "一线", 7.0, "44"),
    City("深圳", "SZ", "一线", 7.0, "44"),
    City("成都", "CD", "新一线", 6.0, "51"),
    City("杭州", "HZ", "新一线", 5.0, "33"),
    City("重庆", "CQ", "新一线", 5.0, "50"),
    City("武汉", "WH", "新一线", 5.0, "42"),
    City("西安", "XA", "新一线", 4.0, "61"),
    City("南京", "NJ", "新一线", 4.0, "32"),
    City("苏州", "SU", "新一线", 4.0, "32"),
    City("天津", "TJ", "新一线", 4.0, "12"),
    City("长沙", "CS", "新一线", 4.0, "43"),
    City("郑州", "ZZ", "新一线", 4.0, "41"),
    City("青岛", "QD", "新一线", 3.0, "37"),
    City("合肥", "HF", "新一线", 3.0, "34"),
    City("昆明", "KM", "二线", 2.5, "53"),
    City("济南", "JN", "二线", 2.5, "37"),
    City("福州", "FZ", "二线", 2.0, "35"),
    City("厦门", "XM", "二线", 2.0, "35"),
    City("南宁", "NN", "二线", 2.0, "45"),
    City("洛阳", "LY", "三线", 1.5, "41"),
    City("绵阳", "MY", "三线", 1.0, "51"),
    City("桂林", "GL", "三线", 1.0, "45"),
)
CITY_BY_NAME = {city.name: city for city in CITIES}

# Real tertiary hospitals where known; every city also has its municipal first hospital.
HOSPITALS: dict[str, tuple[str, ...]] = {
    "北京": (
        "北京协和医院",
        "北京大学第一医院",
        "北京大学人民医院",
        "首都医科大学附属北京安贞医院",
    ),
    "上海": ("复旦大学附属中山医院", "上海交通大学医学院附属瑞金医院", "复旦大学附属华山医院"),
    "广州": ("中山大学附属第一医院", "广东省人民医院", "南方医科大学南方医院"),
    "深圳": ("深圳市人民医院", "北京大学深圳医院"),
    "成都": ("四川大学华西医院", "四川省人民医院"),
    "杭州": ("浙江大学医学院附属第一医院", "浙江省人民医院"),
    "重庆": ("重庆医科大学附属第一医院",),
    "武汉": ("华中科技大学同济医学院附属同济医院", "武汉大学人民医院"),
    "西安": ("西安交通大学第一附属医院",),
    "南京": ("江苏省人民医院", "南京鼓楼医院"),
    "苏州": ("苏州大学附属第一医院",),
    "天津": ("天津医科大学总医院",),
    "长沙": ("中南大学湘雅医院", "中南大学湘雅二医院"),
    "郑州": ("郑州大学第一附属医院",),
    "青岛": ("青岛大学附属医院",),
    "合肥": ("中国科学技术大学附属第一医院",),
    "昆明": ("昆明医科大学第一附属医院",),
    "济南": ("山东省立医院",),
    "福州": ("福建医科大学附属协和医院",),
    "厦门": ("厦门大学附属中山医院",),
    "南宁": ("广西医科大学第一附属医院",),
    "洛阳": ("河南科技大学第一附属医院",),
    "绵阳": ("绵阳市中心医院",),
    "桂林": ("桂林医学院附属医院",),
}


def hospitals_in(city: str) -> tuple[str, ...]:
    return (*HOSPITALS.get(city, ()), f"{city}市第一人民医院")


# Department -> weight; weighted towards the chronic areas the demo drugs treat.
DEPARTMENTS: tuple[tuple[str, float], ...] = (
    ("心内科", 25), ("内分泌科", 20), ("呼吸科", 15), ("消化科", 10), ("神经内科", 8),
    ("肾内科", 6), ("感染科", 5), ("全科医学科", 6), ("老年医学科", 5),
)  # fmt: skip
TITLES: tuple[tuple[str, float], ...] = (
    ("主任医师", 15), ("副主任医师", 25), ("主治医师", 40), ("住院医师", 20),
)  # fmt: skip


class Chain(NamedTuple):
    code: str  # namespace of the chain's ``pharmacy_member`` identities
    name: str
    cities: tuple[str, ...]  # empty: present everywhere


PHARMACY_CHAINS: tuple[Chain, ...] = (
    Chain("lbx", "老百姓大药房", ("长沙", "武汉", "西安", "郑州", "北京", "天津", "杭州", "洛阳")),
    Chain("yf", "益丰大药房", ("长沙", "武汉", "上海", "杭州", "苏州", "南京", "合肥")),
    Chain("dsl", "大参林", ("广州", "深圳", "南宁", "福州", "厦门", "桂林")),
    Chain("yxt", "一心堂", ("昆明", "成都", "重庆", "南宁", "绵阳", "桂林")),
    Chain("gd", "国大药房", ()),
)
STREETS = ("人民路", "解放路", "中山路", "建设路", "和平路", "五一路", "长江路", "新华路", "青年路")
STORES_PER_TIER = {"一线": 8, "新一线": 5, "二线": 3, "三线": 2}


class Store(NamedTuple):
    code: str
    name: str
    chain: str
    city: str


def stores_in(city: City) -> tuple[Store, ...]:
    """The demo stores of every chain present in ``city`` (codes like ``LBX-CS-003``)."""
    stores = []
    for chain in PHARMACY_CHAINS:
        if chain.cities and city.name not in chain.cities:
            continue
        for n in range(1, STORES_PER_TIER[city.tier] + 1):
            street = STREETS[(n + len(chain.code)) % len(STREETS)]
            code = f"{chain.code.upper()}-{city.code}-{n:03d}"
            stores.append(
                Store(code, f"{chain.name}({city.name}{street}店)", chain.code, city.name)
            )
    return tuple(stores)


class Drug(NamedTuple):
    code: str
    name: str  # Chinese generic name with strength and pack
    brand: str
    rx: bool
    otc_class: str | None  # 甲类 / 乙类 for OTC, None for Rx
    days_of_supply: int  # days one pack lasts at the usual dose
    price_cny: float  # one pack
    therapeutic_area: str
    chronic: bool  # taken continuously, so bought again every ``days_of_supply``

    def item(self, qty: int) -> dict:
        """The line of a purchase event's ``items`` for ``qty`` packs of this drug."""
        return {
            "drug_code": self.code,
            "name": self.name,
            "brand": self.brand,
            "rx": self.rx,
            "qty": qty,
            "days_of_supply": self.days_of_supply * qty,  # the days the whole line covers
            "price": self.price_cny,  # per pack
        }


DRUGS: tuple[Drug, ...] = (
    Drug("D001", "阿托伐他汀钙片 20mg×30片", "立普妥", True, None, 30, 98.5, "心血管", True),
    Drug("D002", "瑞舒伐他汀钙片 10mg×28片", "可定", True, None, 28, 86.0, "心血管", True),
    Drug("D003", "苯磺酸氨氯地平片 5mg×28片", "络活喜", True, None, 28, 62.3, "心血管", True),
    Drug("D004", "缬沙坦胶囊 80mg×28粒", "代文", True, None, 28, 55.8, "心血管", True),
    Drug("D005", "硝苯地平控释片 30mg×7片", "拜新同", True, None, 7, 32.6, "心血管", True),
    Drug("D006", "硫酸氢氯吡格雷片 75mg×7片", "波立维", True, None, 7, 118.0, "心血管", True),
    Drug("D007", "阿司匹林肠溶片 100mg×30片", "拜阿司匹灵", True, None, 30, 15.5, "心血管", True),
    Drug("D008", "盐酸二甲双胍片 0.5g×60片", "格华止", True, None, 30, 28.9, "糖尿病", True),
    Drug("D009", "阿卡波糖片 50mg×30片", "拜唐苹", True, None, 10, 46.2, "糖尿病", True),
    Drug("D010", "格列美脲片 2mg×30片", "亚莫利", True, None, 30, 52.0, "糖尿病", True),
    Drug("D011", "达格列净片 10mg×14片", "安达唐", True, None, 14, 65.0, "糖尿病", True),
    Drug("D012", "左甲状腺素钠片 50μg×100片", "优甲乐", True, None, 50, 27.5, "内分泌", True),
    Drug("D013", "沙美特罗替卡松粉吸入剂 50/250μg×60吸", "舒利迭", True, None, 30, 238.0,
         "呼吸", True),
    Drug("D014", "噻托溴铵粉吸入剂 18μg×30粒", "思力华", True, None, 30, 196.0, "呼吸", True),
    Drug("D015", "恩替卡韦分散片 0.5mg×7片", "博路定", True, None, 7, 89.0, "肝病", True),
    Drug("D016", "雷贝拉唑钠肠溶片 10mg×7片", "波利特", True, None, 7, 48.0, "消化", False),
    Drug("D017", "布洛芬缓释胶囊 0.3g×20粒", "芬必得", False, "乙类", 5, 21.8, "感冒发热", False),
    Drug("D018", "连花清瘟胶囊 0.35g×24粒", "以岭", False, "甲类", 4, 16.9, "感冒发热", False),
    Drug("D019", "感冒灵颗粒 10g×9袋", "999", False, "甲类", 3, 14.5, "感冒发热", False),
    Drug("D020", "对乙酰氨基酚片 0.5g×10片", "泰诺林", False, "甲类", 3, 12.8, "感冒发热", False),
    Drug("D021", "维生素C咀嚼片 100mg×60片", "养生堂", False, "乙类", 60, 39.0, "营养补充", False),
    Drug("D022", "碳酸钙D3片 600mg×60片", "钙尔奇", False, "乙类", 60, 72.0, "营养补充", False),
    Drug("D023", "蒙脱石散 3g×10袋", "思密达", False, "甲类", 3, 19.8, "消化", False),
    Drug("D024", "健胃消食片 0.8g×32片", "江中", False, "乙类", 8, 13.5, "消化", False),
    Drug("D025", "氯雷他定片 10mg×6片", "开瑞坦", False, "乙类", 6, 25.6, "过敏", False),
    Drug("D026", "奥美拉唑肠溶胶囊 10mg×14粒", "洛赛克", False, "甲类", 7, 36.0, "消化", False),
)  # fmt: skip
DRUG_BY_CODE = {drug.code: drug for drug in DRUGS}
CHRONIC_RX = tuple(d for d in DRUGS if d.rx and d.chronic)
# How often each chronic drug is the one a patient takes: statins and antihypertensives lead.
CHRONIC_RX_WEIGHTS = (14, 8, 14, 8, 6, 5, 10, 14, 4, 5, 4, 5, 3, 2, 3)
ACUTE_RX = tuple(d for d in DRUGS if d.rx and not d.chronic)
OTC = tuple(d for d in DRUGS if not d.rx)
COLD_AND_FLU = frozenset({"D017", "D018", "D019", "D020"})

# (platform, shop, share): JD and Tmall orders come from their order export, the brand's
# own Youzan micro-shop pushes its trades.
ECOMMERCE_PLATFORMS = (("jd", "京东健康", 0.45), ("tmall", "阿里健康大药房", 0.35),
                       ("youzan", "康护健康微商城", 0.2))  # fmt: skip

# CN mobile number prefixes (China Mobile, Unicom, Telecom) that phones are drawn from.
PHONE_PREFIXES = tuple(
    str(p)
    for p in (*range(130, 140), 150, 151, 152, 153, 155, 156, 157, 158, 159, 166, 173, 175, 176,
              177, 178, *range(180, 190), 198, 199)
)  # fmt: skip
# (youngest, oldest, weight, share on a chronic Rx drug): chronic medication rises with age.
AGE_BANDS = ((18, 29, 15, 0.03), (30, 44, 25, 0.12), (45, 59, 30, 0.35), (60, 75, 22, 0.6),
             (76, 88, 8, 0.7))  # fmt: skip
# Share of patients the brand reaches on each channel.
CHANNEL_REACH = (("wechat", 0.7), ("miniprogram", 0.5), ("pos", 0.45), ("ecommerce", 0.3))
# Local hour of day people read, click and shop: morning, lunch and evening peaks.
HOUR_WEIGHTS = (1, .5, .3, .2, .2, .5, 2, 5, 8, 9, 8, 7, 8, 6, 5, 5, 5, 5, 6, 8, 9, 8, 5,
                2)  # fmt: skip

# The demo brand's WeChat apps: the identities' namespaces (wx + 16 hex, like real app ids).
WECHAT_OA_APP_ID = "wx5d3c2b1a0f9e8d7c"
MINIPROGRAM_APP_ID = "wx7e6f5a4b3c2d1e0f"
# channel -> (source id, kind, name, options without secrets)
DEMO_SOURCES: dict[str, tuple[str, str, str, dict]] = {
    "wechat": ("src_demo_wechat", "wechat", "康护健康 服务号", {"app_id": WECHAT_OA_APP_ID}),
    "miniprogram": ("src_demo_miniprogram", "miniprogram", "康护健康 小程序",
                    {"app_id": MINIPROGRAM_APP_ID}),
    "pos": ("src_demo_pos", "pos", "合作药房 POS 销售",
            {"chains": [c.code for c in PHARMACY_CHAINS]}),
    "ecommerce": ("src_demo_ecommerce", "ecommerce", "康护健康 电商旗舰店",
                  {"platforms": [p[0] for p in ECOMMERCE_PLATFORMS]}),
}  # fmt: skip
HTTP_SOURCE_NAME = "康护健康 官网与 CRM（HTTP 接入）"
DEMO_USERS = (
    ("admin@carepath.demo", "admin", "演示管理员"),
    ("marketer@carepath.demo", "marketer", "演示市场专员"),
    ("reviewer@carepath.demo", "reviewer", "演示医学审核"),
    ("analyst@carepath.demo", "analyst", "演示数据分析师"),
    # The field force of the doctors' area (cdp.seed.hcp): two reps and their manager.
    ("rep.north@carepath.demo", "rep", "演示医药代表（华北华东）"),
    ("rep.south@carepath.demo", "rep", "演示医药代表（华南西部）"),
    ("manager@carepath.demo", "manager", "演示地区经理"),
)

ARTICLES: tuple[tuple[str, str], ...] = (
    ("art_001", "高血压患者的日常饮食：少盐不等于无盐"),
    ("art_002", "他汀类药物要吃一辈子吗？医生这样说"),
    ("art_003", "血糖忽高忽低？掌握这五个控糖小技巧"),
    ("art_004", "二甲双胍伤肾吗？关于降糖药的三个误区"),
    ("art_005", "秋冬季节如何预防流感"),
    ("art_006", "慢阻肺患者如何正确使用吸入剂"),
    ("art_007", "体检报告中的血脂指标怎么看"),
    ("art_008", "按时服药有多重要？漏服药物怎么办"),
    ("art_009", "甲减患者日常注意事项"),
    ("art_010", "发烧了什么时候该吃退烧药"),
    ("art_011", "胃不舒服，是胃炎还是消化不良"),
    ("art_012", "老年人补钙的正确方式"),
    ("art_013", "心梗的早期信号，千万别忽视"),
    ("art_014", "春季过敏高发，如何科学应对"),
    ("art_015", "家庭血压测量的正确姿势"),
    ("art_016", "乙肝患者需要长期服药吗"),
)
HCP_ARTICLES: tuple[tuple[str, str], ...] = (
    ("hcp_001", "2024 中国血脂管理指南要点解读"),
    ("hcp_002", "SGLT2 抑制剂在心衰合并糖尿病中的应用"),
    ("hcp_003", "慢阻肺稳定期吸入治疗方案选择"),
    ("hcp_004", "高血压合并冠心病的联合用药策略"),
    ("hcp_005", "甲状腺功能减退症的规范化诊疗"),
)
MEETINGS: tuple[tuple[str, str], ...] = (
    ("mtg_001", "心血管疾病一级预防学术沙龙"),
    ("mtg_002", "糖尿病综合管理城市会"),
    ("mtg_003", "呼吸慢病长期管理线上研讨会"),
    ("mtg_004", "基层医生高血压规范诊疗培训"),
    ("mtg_005", "消化疾病诊疗新进展病例分享会"),
)
TEMPLATES: tuple[tuple[str, str], ...] = (
    ("tmpl_refill", "用药提醒"),
    ("tmpl_coupon", "优惠券到账通知"),
    ("tmpl_points", "积分变动提醒"),
    ("tmpl_checkup", "复诊提醒"),
)
# Where followers scan the OA's parametric QR codes (besides their pharmacy's poster).
QR_SCENES = (("pack_insert", 4), ("hospital_clinic", 3), ("health_talk", 2), ("live_event", 1))
# The OA menu: CLICK keys and VIEW links.
MENU_CLICKS = ("MENU_REFILL_REMINDER", "MENU_MY_POINTS", "MENU_ASK_PHARMACIST", "MENU_COUPONS")
MENU_VIEWS = (
    "https://h5.carepath.demo/articles",
    "https://h5.carepath.demo/stores/nearby",
    "https://h5.carepath.demo/member",
)
FOLLOWER_QUESTIONS = (
    "阿托伐他汀饭前吃还是饭后吃？",
    "降压药漏服了一次怎么办",
    "附近哪家药房有货",
    "积分怎么兑换",
    "优惠券在哪里看",
)
MINIPROGRAM_PAGES: tuple[tuple[str, str], ...] = (
    ("pages/index/index", "首页"),
    ("pages/medication/list", "我的用药"),
    ("pages/coupon/list", "领券中心"),
    ("pages/points/index", "积分商城"),
    ("pages/store/nearby", "附近药房"),
    ("pages/article/detail", "健康科普"),
)
COUPONS: tuple[tuple[str, str, int], ...] = (
    ("cpn_refill_10", "续方立减 10 元", 10),
    ("cpn_new_20", "新会员 20 元券", 20),
    ("cpn_otc_5", "常备药 5 元券", 5),
)

# Templates and pages the demo journeys send besides TEMPLATES (never drawn by the generator).
JOURNEY_TEMPLATES = {
    "welcome": ("tmpl_welcome", "关注成功通知"),
    "quiz": ("tmpl_quiz", "健康测评邀请"),
    "meeting": ("tmpl_meeting", "学术会议通知"),
}
QUIZ_PAGE = "pages/quiz/index"
