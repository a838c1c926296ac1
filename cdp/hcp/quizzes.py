"""Quizzes: questions tagged with knowledge dimensions, scoring, the running knowledge profile.

A quiz is scored per knowledge dimension: a question counts (with its weight) for every
dimension it is tagged with; right means exactly the correct options. The doctor's running
score per dimension moves towards each quiz score by HCP_KNOWLEDGE_WEIGHT (the first quiz
sets it), and every move is kept as history. The first submission of a doctor counts.
"""

from __future__ import annotations

import re
from datetime import datetime

import sqlalchemy as sa

from cdp import audit
from cdp.actors import Actor
from cdp.auth.permissions import require
from cdp.db import db, transaction, utcnow
from cdp.exceptions import Conflict, ValidationFailed
from cdp.hcp import events
from cdp.hcp.academic import award_quietly
from cdp.hcp.doctors import check_owner, master
from cdp.hcp.learning import update_progress
from cdp.hcp.meetings import get_meeting, participant
from cdp.hcp.settings import dimensions, setting
from cdp.models.hcp import KnowledgeChange, KnowledgeScore, Meeting, QuizSubmission

QUESTION_ID = re.compile(r"^[A-Za-z0-9_-]{1,20}$")
MAX_QUESTIONS = 50


def clean_quiz(questions) -> list[dict]:
    """Validate quiz questions: options, correct answers, knowledge dimensions, weights."""
    if not isinstance(questions, list) or not 1 <= len(questions) <= MAX_QUESTIONS:
        raise ValidationFailed(f"quiz must list 1 to {MAX_QUESTIONS} questions", "quiz")
    known, seen, clean = dimensions(), set(), []
    for n, q in enumerate(questions):
        where = f"quiz.{n}"
        if not isinstance(q, dict):
            raise ValidationFailed(f"{where} must be an object", where)
        qid, text, options = q.get("id"), q.get("text"), q.get("options")
        if not isinstance(qid, str) or not QUESTION_ID.match(qid) or qid in seen:
            raise ValidationFailed(
                f"{where}.id must be a unique short id (letters, digits)", f"{where}.id"
            )
        seen.add(qid)
        if not isinstance(text, str) or not 1 <= len(text.strip()) <= 500:
            raise ValidationFailed(f"{where}.text is required (at most 500)", f"{where}.text")
        if (
            not isinstance(options, list)
            or not 2 <= len(options) <= 10
            or not all(isinstance(o, str) and 0 < len(o) <= 200 for o in options)
        ):
            raise ValidationFailed(f"{where}.options must list 2 to 10 answers", f"{where}.options")
        answer = q.get("answer")
        answer = [answer] if isinstance(answer, int) and not isinstance(answer, bool) else answer
        if (
            not isinstance(answer, list)
            or not answer
            or len(set(answer)) != len(answer)
            or not all(type(a) is int and 0 <= a < len(options) for a in answer)
        ):
            raise ValidationFailed(
                f"{where}.answer must name the correct option(s) by index", f"{where}.answer"
            )
        tags = q.get("dimensions")
        if not isinstance(tags, list) or not tags or not all(t in known for t in tags):
            raise ValidationFailed(
                f"{where}.dimensions must be among {', '.join(known)}", f"{where}.dimensions"
            )
        weight = q.get("weight", 1)
        if type(weight) is not int or not 1 <= weight <= 10:
            raise ValidationFailed(f"{where}.weight must be 1 to 10", f"{where}.weight")
        clean.append(
            {
                "id": qid,
                "text": text.strip(),
                "options": options,
                "answer": sorted(answer),
                "dimensions": list(dict.fromkeys(tags)),
                "weight": weight,
            }
        )
    return clean


def set_quiz(actor: Actor, meeting_id: int, questions) -> Meeting:
    """Replace the quiz; refused once anyone submitted answers (their scores would change)."""
    require(actor, "hcp:edit")
    clean = clean_quiz(questions)
    with transaction():
        meeting = get_meeting(meeting_id)
        taken = db.session.scalar(
            sa.select(QuizSubmission.id).where(QuizSubmission.meeting_id == meeting.id).limit(1)
        )
        if taken is not None:
            raise Conflict("answers were submitted already: the quiz cannot change", "quiz")
        meeting.quiz, meeting.updated_at = clean, utcnow()
        audit.record(actor, "hcp.quiz_set", "hcp_meeting", meeting.id, questions=len(clean))
    return meeting


def _given(value) -> list[int] | None:
    if type(value) is int:
        return [value]
    if isinstance(value, list) and value and all(type(v) is int for v in value):
        return sorted(set(value))
    return None


def score(quiz: list[dict], answers: dict) -> tuple[dict[str, float], int]:
    """(score 0-100 per dimension, questions right) of answers {question id: option(s)}."""
    weights: dict[str, list[int]] = {}
    right_count = 0
    for question in quiz:
        right = _given(answers.get(question["id"])) == question["answer"]
        right_count += right
        for dimension in question["dimensions"]:
            got, total = weights.setdefault(dimension, [0, 0])
            weight = question.get("weight", 1)
            weights[dimension] = [got + (weight if right else 0), total + weight]
    scores = {d: round(100 * got / total, 1) for d, (got, total) in weights.items() if total}
    return scores, right_count


def clean_answers(quiz: list[dict], answers) -> dict:
    """Answers for known questions only; ValidationFailed on anything else (API input)."""
    if not isinstance(answers, dict) or not answers:
        raise ValidationFailed("answers must map question ids to option indexes", "answers")
    known = {q["id"]: len(q["options"]) for q in quiz}
    for qid, value in answers.items():
        given = _given(value)
        if qid not in known:
            raise ValidationFailed(f"no question {qid!r} in this quiz", "answers")
        if given is None or not all(0 <= v < known[qid] for v in given):
            raise ValidationFailed(f"answer to {qid!r} must be option indexes", "answers")
    return answers


def _update_knowledge(submission: QuizSubmission, at: datetime) -> None:
    weight = float(setting("HCP_KNOWLEDGE_WEIGHT"))
    for dimension, quiz_score in sorted(submission.scores.items()):
        row = db.session.get(KnowledgeScore, (submission.profile_id, dimension))
        before = row.score if row is not None else None
        after = (
            quiz_score if before is None else round(before * (1 - weight) + quiz_score * weight, 1)
        )
        if row is None:
            row = KnowledgeScore(
                profile_id=submission.profile_id, dimension=dimension, score=after, assessments=0
            )
            db.session.add(row)
        row.score, row.assessments, row.updated_at = after, row.assessments + 1, at
        db.session.add(
            KnowledgeChange(
                profile_id=submission.profile_id,
                dimension=dimension,
                score_before=before,
                score_after=after,
                quiz_score=quiz_score,
                submission_id=submission.id,
                meeting_id=submission.meeting_id,
                at=at,
            )
        )


def record_submission(
    meeting: Meeting, profile_id: int, answers: dict, at: datetime, event_id: int | None = None
) -> QuizSubmission | None:
    """Score and store the first submission of a doctor for a meeting (None: one exists)."""
    if not meeting.quiz:
        return None
    exists = db.session.scalar(
        sa.select(QuizSubmission.id).where(
            QuizSubmission.meeting_id == meeting.id, QuizSubmission.profile_id == profile_id
        )
    )
    if exists is not None:
        return None
    known = {q["id"] for q in meeting.quiz}
    answers = {k: v for k, v in (answers or {}).items() if k in known}
    scores, right = score(meeting.quiz, answers)
    submission = QuizSubmission(
        meeting_id=meeting.id,
        profile_id=profile_id,
        answers=answers,
        scores=scores,
        correct=right,
        total=len(meeting.quiz),
        event_id=event_id,
        submitted_at=at,
    )
    db.session.add(submission)
    db.session.flush()
    _update_knowledge(submission, at)
    participant(meeting.id, profile_id)  # everyone who took part has a row in the funnel
    return submission


def submit_quiz(actor: Actor, meeting_id: int, profile_id: int, answers) -> QuizSubmission:
    """Answers entered for a doctor (e.g. a paper quiz at a department meeting)."""
    require(actor, "hcp:edit")
    with transaction():
        meeting = get_meeting(meeting_id)
        if not meeting.quiz:
            raise Conflict("this meeting has no quiz", "meeting_id")
        row = master(profile_id)
        check_owner(actor, row)
        submission = record_submission(
            meeting, row.profile_id, clean_answers(meeting.quiz, answers), utcnow()
        )
        if submission is None:
            raise Conflict("this doctor has answered the quiz already", "profile_id")
        outbox = events.emit(
            row.profile_id,
            events.QUIZ_SUBMITTED,
            f"quiz:{meeting.id}:{row.profile_id}",
            {"meeting_id": meeting.id, "submission_id": submission.id, "scores": submission.scores},
        )
        audit.record(
            actor,
            "hcp.quiz_submitted",
            "hcp_meeting",
            meeting.id,
            profile_id=row.profile_id,
            scores=submission.scores,
        )
        newly = update_progress(meeting, row.profile_id)
    events.hand_off(outbox or newly)
    if newly:
        award_quietly(actor, meeting.id, row.profile_id)
    return submission
