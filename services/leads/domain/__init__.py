"""Pure rules of acquisition and sales, one module per rule family: what a lead is (``intake``),
red flags, dedupe, ICP fit, BANT qualification, engagement, the funnel's stages, the deposit
share (``deposit``), change-request scope, and the sales department's lead assignment and
commission plans.

No I/O and no clock calls: every function takes values (including "now") and returns
decisions. The rules the use cases apply are re-exported here (``domain.fit_score``);
assignment and commission are imported from their own modules."""

from services.leads.domain.dedupe import (
    COMPANY_CANDIDATES,
    FREE_MAIL,
    MatchedBy,
    company_domain,
    email_domain,
    normalise_email,
    normalise_name,
    same_person,
)
from services.leads.domain.deposit import MIN_SHARE, DepositPolicy, deposit_share
from services.leads.domain.engagement import (
    ENGAGEMENT_CAP,
    EngagementPolicy,
    decayed,
    engage,
    engagement_score,
)
from services.leads.domain.fit import (
    CRITERIA,
    DECISION_MAKER_TITLES,
    DEFAULT_ICP,
    DEFAULT_ICP_YAML,
    IDEAL_FIT,
    Criterion,
    Fit,
    IdealClientProfile,
    fit_score,
    is_decision_maker,
    parsed_icp,
    segment,
)
from services.leads.domain.intake import CHANNELS, INBOUND_CHANNELS, OUTBOUND_CHANNELS, TIERS, Intake
from services.leads.domain.qualification import (
    Bant,
    Qualification,
    QualificationPolicy,
    answered,
    qualify,
    suggested_bant,
)
from services.leads.domain.red_flags import RED_FLAGS, RedFlag, add_flag, changes_mind_often, intake_red_flags
from services.leads.domain.scope import ScopeDecision, assess_change, hours_used
from services.leads.domain.stages import (
    ORDER,
    STAGE_ON_EVENT,
    STAGES,
    FunnelCounts,
    entry_time_matters,
    funnel_counts,
    next_stage,
    period_of,
    reached_rank,
)

__all__ = [
    "CHANNELS",
    "COMPANY_CANDIDATES",
    "CRITERIA",
    "DECISION_MAKER_TITLES",
    "DEFAULT_ICP",
    "DEFAULT_ICP_YAML",
    "ENGAGEMENT_CAP",
    "FREE_MAIL",
    "IDEAL_FIT",
    "INBOUND_CHANNELS",
    "MIN_SHARE",
    "ORDER",
    "OUTBOUND_CHANNELS",
    "RED_FLAGS",
    "STAGES",
    "STAGE_ON_EVENT",
    "TIERS",
    "Bant",
    "Criterion",
    "DepositPolicy",
    "EngagementPolicy",
    "Fit",
    "FunnelCounts",
    "IdealClientProfile",
    "Intake",
    "MatchedBy",
    "Qualification",
    "QualificationPolicy",
    "RedFlag",
    "ScopeDecision",
    "add_flag",
    "answered",
    "assess_change",
    "changes_mind_often",
    "company_domain",
    "decayed",
    "deposit_share",
    "email_domain",
    "engage",
    "engagement_score",
    "entry_time_matters",
    "fit_score",
    "funnel_counts",
    "hours_used",
    "intake_red_flags",
    "is_decision_maker",
    "next_stage",
    "normalise_email",
    "normalise_name",
    "parsed_icp",
    "period_of",
    "qualify",
    "reached_rank",
    "same_person",
    "segment",
    "suggested_bant",
]
