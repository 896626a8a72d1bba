"""Statistics of seed-paired ablations: plain numpy/scipy, each function tested against scipy or its formula.

Every arm of an ablation is trained with the same seeds, and a seed fixes the data order and the encoder's
initialisation, so two arms are compared seed by seed: the contrast of arms A and B is the mean of the per-seed
differences d_s = A_s - B_s, with a paired t interval and test (df = n - 1) and a percentile bootstrap interval.

A sweep may declare a trimmed estimator (`trim` = gamma > 0, `TRIMMED_RULE`): every mean, t interval, t-test, TOST
and non-equivalence test below is then that of the gamma-trimmed mean of the d_s (Tukey and McLaughlin), so that a
run that collapsed, a rare event seed pairing cannot cancel, does not decide a contrast.

Verdict rules (`verdict`; quoted in every report). alpha = 0.05. The p-values of all contrasts of one family (the
hypotheses of one network in one preset) are Holm-adjusted together; the TOST p-values are Holm-adjusted over the
same family separately.
- A directed claim "A beats B" (expected d > 0), with an equivalence margin m:
    held            the Holm-adjusted two-sided p < alpha and the mean difference is > 0;
    did not hold    the Holm-adjusted two-sided p < alpha and the mean difference is < 0;
    equivalent      not significant, and the Holm-adjusted TOST p < alpha: the difference lies within +-m, so any
                    effect in the claimed direction is smaller than the margin;
    inconclusive    otherwise (the interval is too wide to decide; more seeds would).
- A no-difference claim "A and B are equivalent within +-m":
    held            the Holm-adjusted TOST p < alpha (the 1 - 2 alpha interval lies inside +-m);
    did not hold    the Holm-adjusted non-equivalence p < alpha (`nonequivalence`: the difference lies beyond the
                    margin on the side of its estimate; unadjusted, the 1 - 2 alpha interval lies outside +-m);
    inconclusive    otherwise.

With n <= 12 seeds the nonparametric interval beside the t interval is the exact sign-flip interval (`sign_flip`),
not a bootstrap: at such n the percentile bootstrap under-covers.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import optimize
from scipy import stats as sps

ALPHA = 0.05
POWER = 0.8
VERDICTS = ("held", "did not hold", "equivalent", "inconclusive")
RULES = __doc__[__doc__.index("Verdict rules") :].strip()
SIGN_FLIP_MAX_N = 12  # up to here the exact sign-flip interval replaces the bootstrap (2^12 sign patterns)
TRIMMED_RULE = (
    "Trimmed estimator (trim = gamma): the g = floor(gamma n) smallest and g largest per-seed differences are set "
    "aside; the estimate is the mean of the other h = n - 2g, its standard error the winsorized SD (the g extremes "
    "on each side replaced by the nearest kept value) / ((1 - 2 gamma) sqrt(n)), and every t interval and t-test "
    "(the TOST and the non-equivalence test too) uses that estimate and error with h - 1 degrees of freedom "
    "(Tukey and McLaughlin 1963; Wilcox, Introduction to Robust Estimation, 4.4.1). The nonparametric interval "
    "beside it stays that of the plain mean."
)


@dataclasses.dataclass(frozen=True)
class Contrast:
    """Paired contrast of two arms over n seeds: d_s = a_s - b_s."""

    mean: float  # mean of d (its trimmed mean when trim > 0)
    sd: float  # sample standard deviation of d (ddof=1; winsorized when trim > 0)
    n: int
    ci_low: float  # (1 - alpha) t interval of the mean
    ci_high: float
    p: float  # two-sided paired t-test of mean(d) = 0
    robust_low: float  # (1 - alpha) nonparametric interval of the mean: `robust_method`'s
    robust_high: float
    robust_method: str  # 'sign-flip' (exact, n <= SIGN_FLIP_MAX_N) or 'bootstrap' (percentile, larger n)
    trim: float = 0.0  # > 0: mean, sd, the t interval and p are those of the trim-trimmed mean (TRIMMED_RULE)


def _as_differences(a, b) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired values must be two 1-D arrays of equal length (same seed order), got {a.shape} and {b.shape}"
        )
    if not np.all(np.isfinite(a)) or not np.all(np.isfinite(b)):
        raise ValueError("paired values must be finite")
    return a - b


@dataclasses.dataclass(frozen=True)
class Location:
    """The estimate of mean(d) a t-test uses: the mean or a trimmed mean, its SD, standard error and degrees of
    freedom."""

    mean: float
    sd: float  # ddof=1; winsorized for a trimmed mean
    se: float
    df: int


def location(d, trim: float = 0.0) -> Location:
    """The mean of d with its t standard error (trim = 0), or its trim-trimmed mean (TRIMMED_RULE)."""
    d = np.sort(np.asarray(d, np.float64))
    n = len(d)
    if not 0 <= trim < 0.5:
        raise ValueError(f"the trimmed share must be in [0, 0.5), got {trim}")
    g = math.floor(trim * n)
    if n - 2 * g < 2:
        raise ValueError(f"trimming {trim} of {n} values keeps {n - 2 * g}; a t-test needs at least 2")
    winsorized = np.concatenate([np.full(g, d[g]), d[g : n - g], np.full(g, d[n - g - 1])])
    sd = float(winsorized.std(ddof=1))
    return Location(float(d[g : n - g].mean()), sd, *_standard_error(sd, n, trim))


def _standard_error(sd: float, n: int, trim: float) -> tuple[float, int]:
    """(standard error, degrees of freedom) of the trim-trimmed mean of n values whose (winsorized) SD is sd; the
    mean's sd / sqrt(n) and n - 1 at trim = 0 (TRIMMED_RULE)."""
    return sd / ((1 - 2 * trim) * math.sqrt(n)), n - 2 * math.floor(trim * n) - 1


def paired_contrast(a, b, *, alpha: float = ALPHA, trim: float = 0.0, n_boot: int = 10000, seed: int = 0) -> Contrast:
    """Mean (or trimmed mean, `trim` > 0) of a - b per seed with its t interval and two-sided paired t-test, and a
    nonparametric interval of the mean: the exact sign-flip interval up to SIGN_FLIP_MAX_N seeds, a percentile
    bootstrap beyond.

    With zero spread (all differences equal) the t interval is that value and p is 1 for a zero mean, 0 otherwise.
    """
    d = _as_differences(a, b)
    n = len(d)
    if n < 2:
        raise ValueError(f"a paired contrast needs at least 2 seeds, got {n}")
    loc = location(d, trim)
    if loc.se == 0:
        low = high = loc.mean
        p = 1.0 if loc.mean == 0 else 0.0
    else:
        half = sps.t.ppf(1 - alpha / 2, loc.df) * loc.se
        low, high = loc.mean - half, loc.mean + half
        p = float(2 * sps.t.sf(abs(loc.mean / loc.se), loc.df))
    t_part = (loc.mean, loc.sd, n, float(low), float(high), p)
    if n <= SIGN_FLIP_MAX_N:
        exact = sign_flip(d, np.zeros(n), alpha=alpha)
        return Contrast(*t_part, exact.ci_low, exact.ci_high, "sign-flip", trim)
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    boot_low, boot_high = np.quantile(boot, [alpha / 2, 1 - alpha / 2])
    return Contrast(*t_part, float(boot_low), float(boot_high), "bootstrap", trim)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order (each >= its raw p, at most 1)."""
    p = np.asarray(p_values, np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted_sorted = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adjusted_sorted, 1.0)
    return out


def tost(a, b, margin: float, *, trim: float = 0.0) -> float:
    """p-value of the two one-sided paired t-tests that |mean(a - b)| < margin (equivalence when p < alpha); of the
    trimmed mean with `trim` > 0."""
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be > 0, got {margin}")
    loc = location(_as_differences(a, b), trim)
    if loc.se == 0:
        return 0.0 if abs(loc.mean) < margin else 1.0
    p_above_lower = sps.t.sf((loc.mean + margin) / loc.se, loc.df)  # H0: mean <= -margin
    p_below_upper = sps.t.cdf((loc.mean - margin) / loc.se, loc.df)  # H0: mean >= +margin
    return float(max(p_above_lower, p_below_upper))


def nonequivalence(a, b, margin: float, *, trim: float = 0.0) -> float:
    """p-value of the one-sided paired t-test that the mean of a - b lies beyond +-margin on the side of its
    estimate (H0: |mean| <= margin); below alpha, the 1 - 2 alpha t interval lies entirely outside +-margin. Of the
    trimmed mean with `trim` > 0."""
    if not margin > 0:
        raise ValueError(f"the equivalence margin must be > 0, got {margin}")
    loc = location(_as_differences(a, b), trim)
    if loc.se == 0:
        return 0.0 if abs(loc.mean) > margin else 1.0
    return float(sps.t.sf((abs(loc.mean) - margin) / loc.se, loc.df))


@dataclasses.dataclass(frozen=True)
class SignFlip:
    """The exact paired sign-flip test of mean(a - b) = 0 and its interval by test inversion."""

    mean: float
    n: int
    p: float  # two-sided: the share of the 2^n sign patterns whose |mean| is at least the observed one
    ci_low: float  # every shift delta whose test p(delta) > alpha lies in [ci_low, ci_high]; +-inf when no
    ci_high: float  # test at this n can reject at alpha (2 / 2^n > alpha)


def sign_flip(a, b, *, alpha: float = ALPHA) -> SignFlip:
    """Exact sign-flip (permutation) test over all 2^n flips of the paired differences d = a - b.

    p(delta) tests mean(d) = delta with the statistic |mean(d - delta)|; the interval is the hull of the deltas
    with p(delta) > alpha. p(delta) only changes where |mean(s * (d - delta))| = |mean(d - delta)| for a sign
    pattern s, so the interval's ends are among those breakpoints, and each is checked exactly.
    """
    d = _as_differences(a, b)
    n = len(d)
    if not 1 <= n <= 20:
        raise ValueError(f"the exact sign-flip test enumerates 2^n patterns: n must be 1..20, got {n}")
    signs = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # (2^n, n) of +-1
    mean = float(d.mean())
    p = float(_sign_flip_p(d, signs, np.array([0.0]))[0])
    if 2.0 / 2**n > alpha:
        return SignFlip(mean, n, p, -math.inf, math.inf)
    flipped_mean, flipped_share = signs @ d / n, signs.mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        breakpoints = np.concatenate(
            [(mean - flipped_mean) / (1 - flipped_share), (mean + flipped_mean) / (1 + flipped_share), d, [mean]]
        )
    breakpoints = np.unique(breakpoints[np.isfinite(breakpoints)])
    breakpoints = breakpoints[(breakpoints >= d.min()) & (breakpoints <= d.max())]
    accepted = breakpoints[_sign_flip_p(d, signs, breakpoints) > alpha]
    return SignFlip(mean, n, p, float(accepted.min()), float(accepted.max()))


def _sign_flip_p(d: np.ndarray, signs: np.ndarray, deltas: np.ndarray, chunk: int = 256) -> np.ndarray:
    """p(delta) of the sign-flip test for each of `deltas` (ties count as at least as extreme)."""
    n = len(d)
    flipped_mean, flipped_share = signs @ d / n, signs.mean(axis=1)
    out = np.empty(len(deltas))
    for start in range(0, len(deltas), chunk):
        delta = deltas[start : start + chunk]
        observed = np.abs(d.mean() - delta)
        tolerance = 1e-9 * (np.abs(d).max() + np.abs(delta) + 1e-300)
        statistics = np.abs(flipped_mean[:, None] - flipped_share[:, None] * delta[None, :])
        out[start : start + chunk] = np.mean(statistics >= observed - tolerance, axis=0)
    return out


def hodges_lehmann(a, b) -> float:
    """The Hodges-Lehmann estimate of the paired shift: the median of the Walsh averages (d_i + d_j) / 2, i <= j.
    Robust to one collapsed seed, unlike the mean."""
    d = _as_differences(a, b)
    i, j = np.triu_indices(len(d))
    return float(np.median((d[i] + d[j]) / 2))


def exact_rate_test(events, totals) -> float:
    """Fisher-Freeman-Halton exact test that k groups share one event rate (e.g. collapsed runs per arm): the
    probability, given the margins, of every table of event counts at most as probable as the observed one."""
    events, totals = np.asarray(events, np.int64), np.asarray(totals, np.int64)
    if events.shape != totals.shape or events.ndim != 1 or np.any(events < 0) or np.any(events > totals):
        raise ValueError(f"events {events.tolist()} must be counts of at most totals {totals.tolist()}, group by group")
    distribution = sps.multivariate_hypergeom(totals, int(events.sum()))
    observed = distribution.pmf(events)
    tables = _tables(totals.tolist(), int(events.sum()))
    probabilities = distribution.pmf(np.array(tables))
    return float(min(1.0, probabilities[probabilities <= observed * (1 + 1e-7)].sum()))


@dataclasses.dataclass(frozen=True)
class PhaseAlignment:
    """The phase-error ratio of a split against its null reference (`phase_alignment_test`)."""

    ratio: float  # max / min over phases of errors / pixels, the images' tables summed as observed
    null_95: float  # the 95th percentile of that ratio when each image's phase grid is shifted at random
    p: float  # the share of those shifts (the observed one counted) giving a ratio at least as large


def phase_alignment_test(errors, pixels, *, draws: int = 10000, seed: int = 0) -> PhaseAlignment:
    """Do errors fall on the same output phases (row and column mod the stride) across images, as a decoder's
    checkerboard would make them? `errors` and `pixels` are per-image (images, stride, stride) counts. Under the null,
    an image's errors have no fixed relation to the network's grid, so each image's tables may be cyclically shifted
    by any (dy, dx): a randomization test that keeps every image's spatial clustering of errors, which a multinomial
    null over pixels would ignore (too narrow). Every shift combination is enumerated when there are at most `draws`
    of them, otherwise `draws` are drawn with `seed`."""
    errors, pixels = np.asarray(errors, np.int64), np.asarray(pixels, np.int64)
    if errors.shape != pixels.shape or errors.ndim != 3 or errors.shape[1] != errors.shape[2]:
        raise ValueError(f"errors {errors.shape} and pixels {pixels.shape} must both be (images, stride, stride)")
    n, stride = errors.shape[0], errors.shape[1]
    phases = stride * stride
    if n * math.log(phases) <= math.log(draws):
        shifts = np.array(np.meshgrid(*[np.arange(phases)] * n, indexing="ij")).reshape(n, -1).T
    else:
        shifts = np.random.default_rng(seed).integers(0, phases, size=(draws, n))
        shifts[0] = 0  # the observed alignment is one of the draws
    # source[k, q]: the phase whose counts land on phase q when an image is shifted by (dy, dx) = divmod(k, stride)
    dy, dx = np.divmod(np.arange(phases), stride)
    rows, cols = np.divmod(np.arange(phases), stride)
    source = ((rows[None] - dy[:, None]) % stride) * stride + (cols[None] - dx[:, None]) % stride
    flat_errors, flat_pixels = errors.reshape(n, phases), pixels.reshape(n, phases)

    def ratios(chosen):  # (m, images) shift ids -> (m,) max / min of the summed rates
        summed_errors = sum(flat_errors[i][source[chosen[:, i]]] for i in range(n))
        summed_pixels = sum(flat_pixels[i][source[chosen[:, i]]] for i in range(n))
        rates = summed_errors / np.maximum(summed_pixels, 1)
        low, high = rates.min(1), rates.max(1)
        return np.divide(high, low, out=np.full(len(rates), np.inf), where=low > 0)

    observed = float(ratios(np.zeros((1, n), np.int64))[0])
    null = ratios(shifts)
    return PhaseAlignment(observed, float(np.quantile(null, 0.95)), float(np.mean(null >= observed * (1 - 1e-12))))


def above_chance(events: int, trials: int, rate: float) -> float:
    """One-sided exact binomial p that `events` of `trials` independent runs would pass a test of level `rate` this
    often or more if nothing were there (e.g. runs whose phase-error ratio exceeds its null's 95th percentile)."""
    if not 0 <= events <= trials or not 0 < rate < 1:
        raise ValueError(f"need 0 <= events ({events}) <= trials ({trials}) and 0 < rate ({rate}) < 1")
    return float(sps.binom.sf(events - 1, trials, rate))


def _tables(totals: list[int], events: int) -> list[list[int]]:
    """Every way of spreading `events` over groups of sizes `totals`."""
    if len(totals) == 1:
        return [[events]] if events <= totals[0] else []
    return [[k, *rest] for k in range(min(events, totals[0]) + 1) for rest in _tables(totals[1:], events - k)]


def blocked_anova(table) -> dict:
    """Two-way ANOVA without replication, seeds as blocks: does the arm matter? `table` is (seeds, arms).

    Returns F, its degrees of freedom and p for the arm effect, and the shares of the total sum of squares
    explained by the arms, the seeds and neither (residual).
    """
    y = np.asarray(table, np.float64)
    n, k = y.shape
    grand = y.mean()
    ss_arm = n * ((y.mean(axis=0) - grand) ** 2).sum()
    ss_seed = k * ((y.mean(axis=1) - grand) ** 2).sum()
    ss_total = ((y - grand) ** 2).sum()
    ss_resid = ss_total - ss_arm - ss_seed
    df_arm, df_resid = k - 1, (k - 1) * (n - 1)
    f = (ss_arm / df_arm) / (ss_resid / df_resid) if ss_resid > 0 else math.inf
    share = (lambda ss: ss / ss_total) if ss_total > 0 else (lambda ss: math.nan)
    return {
        "F": float(f),
        "df": (df_arm, df_resid),
        "p": float(sps.f.sf(f, df_arm, df_resid)),
        "share_arm": float(share(ss_arm)),
        "share_seed": float(share(ss_seed)),
        "share_residual": float(share(ss_resid)),
    }


def friedman(table) -> dict:
    """Friedman's rank test of the arms with seeds as blocks (scipy), for (seeds, arms) tables."""
    y = np.asarray(table, np.float64)
    statistic, p = sps.friedmanchisquare(*y.T)
    return {"chi2": float(statistic), "df": y.shape[1] - 1, "p": float(p)}


def power(delta: float, sd: float, n: int, *, alpha: float = ALPHA, trim: float = 0.0) -> float:
    """Power of the two-sided paired t-test at level alpha when the true mean difference is delta (noncentral t).
    With `trim` > 0, of the trimmed-mean test at winsorized SD `sd` (the usual noncentral-t approximation)."""
    se, df = _standard_error(sd, n, trim)
    critical = sps.t.ppf(1 - alpha / 2, df)
    nc = delta / se
    wrong_side = np.nan_to_num(sps.nct.cdf(-critical, df, nc), nan=0.0)  # scipy gives NaN where it is ~1e-30
    return float(sps.nct.sf(critical, df, nc) + wrong_side)


def minimum_detectable_difference(
    sd: float, n: int, *, alpha: float = ALPHA, target: float = POWER, trim: float = 0.0
) -> float:
    """The smallest true mean difference the paired t-test at level alpha detects with probability `target` (the
    trimmed-mean test at winsorized SD `sd` with `trim` > 0).

    For a family corrected by Holm, pass alpha / m: the first step of Holm tests the smallest p at alpha / m.
    """
    if not sd > 0:
        return 0.0
    se, _ = _standard_error(sd, n, trim)
    upper = (sps.t.ppf(1 - alpha / 2, n - 1) + 10) * se  # power there is 1 to many digits
    return float(optimize.brentq(lambda delta: power(delta, sd, n, alpha=alpha, trim=trim) - target, 1e-12 * se, upper))


def simulated_power(
    delta: float,
    sd: float,
    n: int,
    *,
    trim: float = 0.0,
    contaminated: float = 0.0,
    shifts: tuple[float, float] = (0.02, 0.08),
    margin: float | None = None,
    alpha: float = ALPHA,
    draws: int = 4000,
    seed: int = 0,
) -> float:
    """Planning by simulation: the share of `draws` studies of n normal differences (mean delta, SD sd), a share
    `contaminated` of them moved by +-U(shifts) at random (collapsed runs), in which the (trimmed) two-sided test
    rejects at alpha, or with `margin`, the (trimmed) TOST finds equivalence."""
    rng = np.random.default_rng(seed)
    d = rng.normal(delta, sd, (draws, n))
    hit = rng.random((draws, n)) < contaminated
    d += hit * rng.choice([-1.0, 1.0], (draws, n)) * rng.uniform(*shifts, (draws, n))
    if margin is None:
        rejected = []
        for row in d:
            loc = location(row, trim)
            rejected.append(loc.se > 0 and 2 * sps.t.sf(abs(loc.mean) / loc.se, loc.df) < alpha)
        return float(np.mean(rejected))
    zeros = np.zeros(n)
    return float(np.mean([tost(row, zeros, margin, trim=trim) < alpha for row in d]))


@dataclasses.dataclass(frozen=True)
class Verdict:
    """One hypothesis's contrast, its adjusted tests and the verdict the rules give."""

    contrast: Contrast
    p_holm: float
    tost_p: float
    tost_p_holm: float
    margin: float
    claim: str  # 'greater' (a beats b) or 'equivalent'
    verdict: str


def verdict(
    contrast: Contrast,
    *,
    p_holm: float,
    tost_p_holm: float,
    margin: float,
    claim: str,
    nonequivalent_p_holm: float = 1.0,
) -> str:
    """The verdict of the module docstring's rules for one contrast (p-values already Holm-adjusted)."""
    significant = p_holm < ALPHA
    equivalent = tost_p_holm < ALPHA
    if claim == "greater":
        if significant:
            return "held" if contrast.mean > 0 else "did not hold"
        return "equivalent" if equivalent else "inconclusive"
    if claim == "equivalent":
        if equivalent:
            return "held"
        return "did not hold" if nonequivalent_p_holm < ALPHA else "inconclusive"
    raise ValueError(f"claim must be 'greater' or 'equivalent', got {claim!r}")


def family_verdicts(pairs, margins, claims, *, trim: float = 0.0) -> list[Verdict]:
    """Verdicts of a family of paired contrasts: [(a, b)], their margins and claims; Holm over the family. With
    `trim` > 0 every test is that of the trimmed mean (TRIMMED_RULE)."""
    contrasts = [paired_contrast(a, b, trim=trim) for a, b in pairs]
    tosts = [tost(a, b, m, trim=trim) for (a, b), m in zip(pairs, margins, strict=True)]
    beyond = [nonequivalence(a, b, m, trim=trim) for (a, b), m in zip(pairs, margins, strict=True)]
    p_adj, tost_adj, beyond_adj = holm([c.p for c in contrasts]), holm(tosts), holm(beyond)
    rows = zip(contrasts, p_adj, tosts, tost_adj, beyond_adj, margins, claims, strict=True)
    return [
        Verdict(
            c,
            float(p),
            t,
            float(ta),
            m,
            claim,
            verdict(c, p_holm=p, tost_p_holm=ta, margin=m, claim=claim, nonequivalent_p_holm=b),
        )
        for c, p, t, ta, b, m, claim in rows
    ]
