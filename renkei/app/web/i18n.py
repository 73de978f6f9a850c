"""The citizen's pages in Japanese and English."""

from __future__ import annotations

LANGS = ("ja", "en")

_TEXT: dict[str, dict[str, str]] = {
    "title": {"ja": "情報連携の記録", "en": "Record of data exchanges"},
    "lead": {
        "ja": "行政機関があなたの情報をやり取りした記録です。新しい順に表示しています。",
        "en": "Every exchange of your data between public bodies, newest first.",
    },
    "signin_lead": {
        "ja": "ポータル用の符号を入力してください。",
        "en": "Enter your portal code to see the exchanges about you.",
    },
    "portal_code": {"ja": "ポータル符号", "en": "Portal code"},
    "signin": {"ja": "ログイン", "en": "Sign in"},
    "signout": {"ja": "ログアウト", "en": "Sign out"},
    "signin_failed": {
        "ja": "この符号は登録されていません。",
        "en": "This portal code is not known.",
    },
    "when": {"ja": "日時", "en": "When"},
    "requester": {"ja": "照会した機関", "en": "Requested by"},
    "provider": {"ja": "提供した機関", "en": "Provided by"},
    "info": {"ja": "情報", "en": "Information"},
    "action": {"ja": "依頼した処理", "en": "Asked to act"},
    "partner": {"ja": "処理した連携先", "en": "Carried out by"},
    "task": {"ja": "事務", "en": "Administrative task"},
    "legal": {"ja": "根拠", "en": "Legal basis"},
    "flow": {"ja": "手続", "en": "Procedure"},
    "application": {"ja": "申請", "en": "Application"},
    "outcome": {"ja": "結果", "en": "Outcome"},
    "allowed": {"ja": "許可", "en": "Permitted"},
    "exchange": {"ja": "提供の有無", "en": "Exchange"},
    "x_provided": {"ja": "提供あり", "en": "Provided"},
    "x_unreceipted": {
        "ja": "提供機関の受領証なし（提供は確認されていません）",
        "en": "No receipt from the provider (not confirmed as provided)",
    },
    "x_no_answer": {"ja": "回答なし", "en": "No answer"},
    "x_failed": {"ja": "失敗（提供なし）", "en": "Failed (nothing provided)"},
    "x_cancelled": {"ja": "取消（提供なし）", "en": "Cancelled (nothing provided)"},
    "x_not_asked": {
        "ja": "事前に許可（照会前に手続が終了し、提供なし）",
        "en": "Permitted in advance; the procedure ended before asking (nothing provided)",
    },
    "x_denied": {"ja": "提供なし", "en": "Nothing provided"},
    "x_pending": {"ja": "回答待ち", "en": "Awaiting answer"},
    "per_provider": {
        "ja": "（提供機関自身の記録による。照会機関からは報告されていません）",
        "en": "(from the provider's own record; the requesting agency did not report it)",
    },
    "unvouched": {
        "ja": "この記録は署名を確認できません（書き込んだはずの機関の署名がないか一致しません）",
        "en": "This record's signature does not check out (not signed by the party it names)",
    },
    "denied": {"ja": "不許可（提供なし）", "en": "Refused (nothing provided)"},
    "held": {"ja": "表示保留", "en": "Withheld until"},
    "agency": {"ja": "機関", "en": "Agency"},
    "all_agencies": {"ja": "すべての機関", "en": "All agencies"},
    "since": {"ja": "開始日", "en": "From"},
    "until": {"ja": "終了日", "en": "To"},
    "filter": {"ja": "絞り込む", "en": "Filter"},
    "none": {"ja": "該当する記録はありません。", "en": "No records match."},
    "count": {"ja": "件", "en": "records"},
    "bad_filter": {"ja": "条件が正しくありません。", "en": "The filter is not valid."},
    "other_lang": {"ja": "English", "en": "日本語"},
}


def text(lang: str) -> dict[str, str]:
    """Every string of the pages in ``lang``."""
    return {key: values[lang] for key, values in _TEXT.items()}
