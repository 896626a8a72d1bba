"""experiments.stats against scipy and plain references, on random data with odd sizes and ties; the verdict rules
on constructed cases."""

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sps
from scipy.stats import mstats

from experiments import stats


def _pair(seed, n, shift=0.0, sd=0.02, ties=False):
    rng = np.random.default_rng(seed)
    b = rng.normal(0.8, 0.03, n)
    a = b + shift + rng.normal(0, sd, n)
    if ties:  # rounded scores: equal values and equal differences
        a, b = np.round(a, 2), np.round(b, 2)
    return a, b


@pytest.mark.parametrize(
    "seed,n,shift,ties", [(0, 5, 0.01, False), (1, 7, -0.02, True), (2, 3, 0.0, False), (3, 11, 0.005, True)]
)
def test_paired_contrast_matches_scipy(seed, n, shift, ties):
    a, b = _pair(seed, n, shift, ties=ties)
    c = stats.paired_contrast(a, b)
    reference = sps.ttest_rel(a, b)
    interval = reference.confidence_interval(0.95)
    assert c.n == n and c.mean == pytest.approx(np.mean(a - b)) and c.sd == pytest.approx(np.std(a - b, ddof=1))
    assert c.p == pytest.approx(reference.pvalue, rel=1e-9)
    assert (c.ci_low, c.ci_high) == pytest.approx((interval.low, interval.high), rel=1e-9)
    exact = stats.sign_flip(a, b)
    assert c.robust_method == "sign-flip" and (c.robust_low, c.robust_high) == (exact.ci_low, exact.ci_high)


def test_paired_contrast_beyond_twelve_seeds_gives_scipys_bootstrap_interval():
    a, b = _pair(4, 15, 0.01)
    c = stats.paired_contrast(a, b)
    boot = sps.bootstrap((a - b,), np.mean, n_resamples=20000, method="percentile", rng=np.random.default_rng(9))
    width = c.ci_high - c.ci_low
    assert c.robust_method == "bootstrap"
    assert c.robust_low == pytest.approx(boot.confidence_interval.low, abs=0.05 * width)
    assert c.robust_high == pytest.approx(boot.confidence_interval.high, abs=0.05 * width)


def test_paired_contrast_edge_cases():
    same = stats.paired_contrast([0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    assert (same.mean, same.p, same.ci_low, same.ci_high) == (0.0, 1.0, 0.0, 0.0)
    shifted = stats.paired_contrast([1.5, 2.5, 3.5], [1.0, 2.0, 3.0])  # exactly 0.5 apart: no spread
    assert shifted.p == 0.0 and shifted.ci_low == shifted.ci_high == 0.5
    with pytest.raises(ValueError, match="same seed order"):
        stats.paired_contrast([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        stats.paired_contrast([1.0], [2.0])


def _holm_reference(p):
    """Holm's procedure written out: the i-th smallest p times (m - i), running maximum, capped at 1."""
    m = len(p)
    order = sorted(range(m), key=lambda i: p[i])
    out, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


@pytest.mark.parametrize("seed,m", [(0, 1), (1, 5), (2, 7), (3, 12)])
def test_holm_matches_the_procedure(seed, m):
    p = np.random.default_rng(seed).uniform(0, 0.2, m)
    p[: m // 3] = p[0]  # ties
    np.testing.assert_allclose(stats.holm(p), _holm_reference(list(p)))
    assert np.all(stats.holm(p) >= p)


@pytest.mark.parametrize("seed,n,shift,margin", [(0, 5, 0.0, 0.02), (1, 6, 0.015, 0.01), (2, 9, -0.004, 0.01)])
def test_tost_is_the_larger_one_sided_p(seed, n, shift, margin):
    a, b = _pair(seed, n, shift, sd=0.01)
    d = a - b
    lower = sps.ttest_1samp(d + margin, 0.0, alternative="greater").pvalue
    upper = sps.ttest_1samp(d - margin, 0.0, alternative="less").pvalue
    assert stats.tost(a, b, margin) == pytest.approx(max(lower, upper), rel=1e-9)
    with pytest.raises(ValueError, match="margin"):
        stats.tost(a, b, 0.0)


def _anova_by_regression(y):
    """F of the arm effect as the drop in residual sum of squares when arm dummies join the seed dummies."""
    n, k = y.shape
    seeds, arms = np.repeat(np.eye(n), k, axis=0), np.tile(np.eye(k), (n, 1))

    def rss(x):
        coef, *_ = np.linalg.lstsq(x, y.ravel(), rcond=None)
        return float(((y.ravel() - x @ coef) ** 2).sum())

    full, reduced = rss(np.hstack([seeds, arms[:, 1:]])), rss(seeds)
    df_resid = (n - 1) * (k - 1)
    return ((reduced - full) / (k - 1)) / (full / df_resid), df_resid


@pytest.mark.parametrize("seed,n,k", [(0, 5, 4), (1, 3, 11), (2, 7, 2)])
def test_blocked_anova_matches_the_regression_and_the_paired_t(seed, n, k):
    rng = np.random.default_rng(seed)
    y = rng.normal(0.8, 0.02, (n, 1)) + rng.normal(0, 0.01, (1, k)) + rng.normal(0, 0.01, (n, k))
    result = stats.blocked_anova(y)
    f, df_resid = _anova_by_regression(y)
    assert result["F"] == pytest.approx(f, rel=1e-8) and result["df"] == (k - 1, df_resid)
    assert result["p"] == pytest.approx(sps.f.sf(f, k - 1, df_resid), rel=1e-8)
    assert result["share_arm"] + result["share_seed"] + result["share_residual"] == pytest.approx(1.0)
    if k == 2:  # two arms: the blocked F is the square of the paired t
        t = sps.ttest_rel(y[:, 0], y[:, 1])
        assert result["F"] == pytest.approx(t.statistic**2) and result["p"] == pytest.approx(t.pvalue)


def test_friedman_is_scipys():
    y = np.random.default_rng(4).normal(size=(6, 4)).round(1)
    assert stats.friedman(y)["p"] == pytest.approx(sps.friedmanchisquare(*y.T).pvalue)


@pytest.mark.parametrize("sd,n,alpha", [(0.02, 5, 0.05), (0.043, 3, 0.05), (0.015, 8, 0.05 / 7)])
def test_minimum_detectable_difference_has_the_target_power_by_simulation(sd, n, alpha):
    delta = stats.minimum_detectable_difference(sd, n, alpha=alpha)
    rng = np.random.default_rng(0)
    d = rng.normal(delta, sd, size=(40000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
    rejected = np.mean(np.abs(t) > sps.t.ppf(1 - alpha / 2, n - 1))
    assert rejected == pytest.approx(0.8, abs=0.01)
    # The textbook approximation (t quantiles of alpha/2 and the power) is close to the exact value.
    approx = (sps.t.ppf(1 - alpha / 2, n - 1) + sps.t.ppf(0.8, n - 1)) * sd / np.sqrt(n)
    assert delta == pytest.approx(approx, rel=0.1)


def test_verdict_rules_on_constructed_cases():
    rng = np.random.default_rng(5)
    base = rng.normal(0.8, 0.03, 6)
    noise = rng.normal(0, 0.002, 6)
    clear = (base + 0.05 + noise, base)  # a beats b by far more than the spread
    identical = (base + noise, base)  # no difference
    wrong = (base - 0.05 + noise, base)
    noisy = (base + rng.normal(0.0, 0.05, 6), base)  # too much spread to say anything
    results = stats.family_verdicts([clear, identical, wrong, noisy], [0.01] * 4, ["greater"] * 4)
    assert [r.verdict for r in results] == ["held", "equivalent", "did not hold", "inconclusive"]
    tight = stats.family_verdicts([identical], [0.0001], ["greater"])[0]
    assert tight.verdict == "inconclusive"  # a margin too strict to show equivalence
    claims = stats.family_verdicts([identical, clear, noisy], [0.01] * 3, ["equivalent"] * 3)
    assert [r.verdict for r in claims] == ["held", "did not hold", "inconclusive"]
    assert set(stats.VERDICTS) >= {r.verdict for r in results + claims}
    # Holm: the family's adjusted p-values are what decide.
    assert all(r.p_holm >= r.contrast.p for r in results)


def test_rules_are_quoted_from_the_module():
    assert stats.RULES.startswith("Verdict rules") and "inconclusive" in stats.RULES
    assert all(v in stats.RULES for v in stats.VERDICTS)


def test_holm_family_of_all_pairs():
    """Holm over every pair of k arms controls at alpha: a null family of 10 pairs rejects nothing here."""
    rng = np.random.default_rng(6)
    y = rng.normal(0.8, 0.02, (5, 5))
    p = [stats.paired_contrast(y[:, i], y[:, j]).p for i, j in itertools.combinations(range(5), 2)]
    assert np.all(stats.holm(p) > 0.05)


# --- the exact sign-flip test, non-equivalence, robust estimates and the exact rate test ------------------------


def _sign_flip_p_by_enumeration(d, delta):
    observed = abs(np.mean(d - delta))
    flips = [abs(np.mean(np.array(s) * (d - delta))) for s in itertools.product((1, -1), repeat=len(d))]
    return np.mean(np.array(flips) >= observed - 1e-12)


@pytest.mark.parametrize("seed,n,ties", [(0, 6, False), (1, 7, True), (2, 9, False), (3, 11, True)])
def test_sign_flip_matches_full_enumeration(seed, n, ties):
    a, b = _pair(seed, n, 0.01, sd=0.01, ties=ties)
    d = a - b
    result = stats.sign_flip(a, b)
    assert result.p == pytest.approx(_sign_flip_p_by_enumeration(d, 0.0))
    # The interval's ends are accepted, and just beyond them every shift is rejected.
    for end, outward in ((result.ci_low, -1), (result.ci_high, 1)):
        assert _sign_flip_p_by_enumeration(d, end) > 0.05
        assert _sign_flip_p_by_enumeration(d, end + outward * 1e-6) <= 0.05
    grid = np.linspace(d.min() - 0.01, d.max() + 0.01, 41)
    outside = grid[(grid < result.ci_low) | (grid > result.ci_high)]
    assert all(_sign_flip_p_by_enumeration(d, x) <= 0.05 for x in outside)


def test_sign_flip_cannot_reject_below_six_seeds_and_covers_by_simulation():
    small = stats.sign_flip([0.9, 0.8, 0.85, 0.7, 0.75], [0.1, 0.2, 0.15, 0.3, 0.25])
    assert small.p == 2 / 32 and (small.ci_low, small.ci_high) == (-np.inf, np.inf)
    rng = np.random.default_rng(11)
    covered = [stats.sign_flip(d, np.zeros(7)) for d in rng.standard_t(3, size=(1500, 7)) + 0.2]
    coverage = np.mean([r.ci_low <= 0.2 <= r.ci_high for r in covered])
    assert coverage >= 0.95 - 3 * np.sqrt(0.05 * 0.95 / 1500)  # exact for symmetric errors, heavy tails too


@pytest.mark.parametrize("seed,n,shift,margin", [(0, 8, 0.03, 0.01), (1, 6, -0.02, 0.01), (2, 9, 0.0, 0.02)])
def test_nonequivalence_is_the_one_sided_test_beyond_the_margin(seed, n, shift, margin):
    a, b = _pair(seed, n, shift, sd=0.01)
    d = a - b
    side = np.sign(d.mean())
    reference = sps.ttest_1samp(side * d - margin, 0.0, alternative="greater").pvalue
    assert stats.nonequivalence(a, b, margin) == pytest.approx(reference, rel=1e-9)
    # Below alpha exactly when the 90% t interval lies outside +-margin.
    low, high = sps.ttest_1samp(d, 0.0).confidence_interval(0.90)
    assert (stats.nonequivalence(a, b, margin) < 0.05) == (low > margin or high < -margin)


def test_an_equivalence_claim_does_not_fail_on_an_interval_that_reaches_the_margin():
    """S1's case: a significant difference slightly beyond the margin whose 90% interval still overlaps it is
    inconclusive, not 'did not hold'."""
    b = np.array([0.60, 0.62, 0.64, 0.63, 0.61])
    a = b + np.array([0.018, 0.005, 0.022, 0.010, 0.012])
    (result,) = stats.family_verdicts([(a, b)], [0.01], ["equivalent"])
    assert result.contrast.p < 0.05 and abs(result.contrast.mean) > 0.01
    assert result.verdict == "inconclusive"


def test_hodges_lehmann_is_the_median_of_walsh_averages():
    d = np.array([0.01, 0.012, -0.11, 0.009, 0.011])  # one collapsed seed
    walsh = [(d[i] + d[j]) / 2 for i in range(5) for j in range(i, 5)]
    assert stats.hodges_lehmann(d, np.zeros(5)) == pytest.approx(np.median(walsh))
    assert stats.hodges_lehmann(d, np.zeros(5)) > 0 > d.mean()


def test_exact_rate_test_is_fishers_for_two_groups_and_sums_to_one():
    for events in ([3, 0], [1, 2], [5, 5]):
        table = [[events[0], 8 - events[0]], [events[1], 8 - events[1]]]
        assert stats.exact_rate_test(events, [8, 8]) == pytest.approx(sps.fisher_exact(table).pvalue)
    assert stats.exact_rate_test([0, 0, 0], [5, 5, 5]) == 1.0
    assert stats.exact_rate_test([4, 0, 0], [4, 4, 4]) < stats.exact_rate_test([2, 1, 1], [4, 4, 4])
    with pytest.raises(ValueError, match="counts of at most totals"):
        stats.exact_rate_test([3], [2])


def _rolled_ratio(errors, pixels, shifts, stride):
    """The phase-error ratio with image i's tables rolled by divmod(shifts[i], stride): the plain reference."""
    rolled = [
        (np.roll(e, divmod(k, stride), (0, 1)), np.roll(p, divmod(k, stride), (0, 1)))
        for e, p, k in zip(errors, pixels, shifts, strict=True)
    ]
    rates = sum(e for e, _ in rolled) / sum(p for _, p in rolled)
    return rates.max() / rates.min()


def test_phase_alignment_enumerates_every_shift_of_small_splits():
    rng = np.random.default_rng(3)
    stride, n = 2, 3
    pixels = rng.integers(5, 9, size=(n, stride, stride))
    errors = rng.integers(0, 5, size=(n, stride, stride))
    result = stats.phase_alignment_test(errors, pixels, draws=10**6)
    null = [_rolled_ratio(errors, pixels, s, stride) for s in itertools.product(range(stride * stride), repeat=n)]
    assert result.ratio == pytest.approx(_rolled_ratio(errors, pixels, (0,) * n, stride))
    assert result.null_95 == pytest.approx(np.quantile(null, 0.95))
    assert result.p == pytest.approx(np.mean(np.array(null) >= result.ratio - 1e-12))


def test_phase_alignment_finds_errors_on_one_phase_and_not_random_ones():
    rng = np.random.default_rng(4)
    stride, n = 3, 40
    pixels = np.full((n, stride, stride), 50)
    clustered = rng.integers(0, 6, size=(n, stride, stride))
    aligned = clustered.copy()
    aligned[:, 1, 2] += 4  # every image errs more on the same phase
    found = stats.phase_alignment_test(aligned, pixels, draws=2000, seed=1)
    assert found.ratio > found.null_95 and found.p < 0.01
    unaligned = clustered.copy()
    unaligned[np.arange(n), rng.integers(0, stride, n), rng.integers(0, stride, n)] += 4  # a random phase per image
    assert stats.phase_alignment_test(unaligned, pixels, draws=2000, seed=1).p > 0.05
    p_values = [
        stats.phase_alignment_test(rng.integers(0, 6, size=(n, stride, stride)), pixels, draws=500).p for _ in range(40)
    ]
    assert 0.02 < np.mean(np.array(p_values) < 0.2) < 0.45  # under the null, p < 0.2 about a fifth of the time


def test_phase_alignment_refuses_tables_of_other_shapes():
    with pytest.raises(ValueError, match="must both be"):
        stats.phase_alignment_test(np.zeros((2, 2, 3)), np.ones((2, 2, 3)))


def test_above_chance_is_the_binomial_upper_tail():
    for events, trials, rate in ((0, 7, 0.05), (3, 56, 0.05), (5, 5, 0.3), (2, 9, 0.5)):
        tail = sum(math.comb(trials, k) * rate**k * (1 - rate) ** (trials - k) for k in range(events, trials + 1))
        assert stats.above_chance(events, trials, rate) == pytest.approx(tail, rel=1e-10)
    with pytest.raises(ValueError, match="events"):
        stats.above_chance(4, 3, 0.05)


@pytest.mark.parametrize(
    "seed,n,trim,ties", [(0, 12, 0.2, False), (1, 7, 0.1, True), (2, 11, 0.25, False), (3, 10, 0.2, True)]
)
def test_trimmed_contrast_is_scipys_trimmed_mean_interval(seed, n, trim, ties):
    a, b = _pair(seed, n, 0.004, sd=0.02, ties=ties)
    a[0] -= 0.08  # a collapsed run
    d = a - b
    c = stats.paired_contrast(a, b, trim=trim)
    limits = (trim, trim)
    assert c.trim == trim and c.mean == pytest.approx(float(mstats.trimmed_mean(d, limits=limits)), rel=1e-12)
    assert (c.ci_low, c.ci_high) == pytest.approx(tuple(mstats.trimmed_mean_ci(d, limits=limits)), rel=1e-9)
    se = float(mstats.trimmed_stde(d, limits=limits))
    df = n - 2 * math.floor(trim * n) - 1
    assert c.p == pytest.approx(2 * sps.t.sf(abs(c.mean) / se, df), rel=1e-9)
    # TOST and non-equivalence of the trimmed mean: one-sided t-tests with the same error and degrees of freedom.
    margin = 0.01
    lower, upper = sps.t.sf((c.mean + margin) / se, df), sps.t.cdf((c.mean - margin) / se, df)
    assert stats.tost(a, b, margin, trim=trim) == pytest.approx(max(lower, upper), rel=1e-9)
    beyond = sps.t.sf((abs(c.mean) - margin) / se, df)
    assert stats.nonequivalence(a, b, margin, trim=trim) == pytest.approx(beyond, rel=1e-9)
    # The nonparametric interval stays the plain mean's.
    exact = stats.sign_flip(a, b)
    assert (c.robust_low, c.robust_high) == (exact.ci_low, exact.ci_high)


def test_trimmed_tests_at_zero_trim_are_the_t_tests():
    a, b = _pair(5, 9, 0.003, sd=0.01)
    assert stats.paired_contrast(a, b, trim=0.0) == stats.paired_contrast(a, b)
    assert stats.tost(a, b, 0.01, trim=0.0) == stats.tost(a, b, 0.01)
    assert stats.nonequivalence(a, b, 0.01, trim=0.0) == stats.nonequivalence(a, b, 0.01)
    assert stats.power(0.01, 0.01, 9, trim=0.0) == stats.power(0.01, 0.01, 9)


def test_a_collapsed_seed_does_not_decide_a_trimmed_equivalence():
    """Eleven seeds within +-0.004 and one at -0.08: the mean's TOST fails, the 20% trimmed mean's passes."""
    d = np.array([0.002, -0.003, 0.001, 0.004, -0.002, 0.0, 0.003, -0.001, -0.004, 0.002, 0.001, -0.08])
    zeros = np.zeros_like(d)
    assert stats.tost(d, zeros, 0.01) > 0.05
    assert stats.tost(d, zeros, 0.01, trim=0.2) < 0.001
    verdicts = stats.family_verdicts([(d, zeros)], [0.01], ["equivalent"], trim=0.2)
    assert verdicts[0].verdict == "held" and verdicts[0].contrast.trim == 0.2


def test_trimmed_location_refuses_what_it_cannot_test():
    with pytest.raises(ValueError, match="trimmed share"):
        stats.location(np.arange(5.0), 0.5)
    with pytest.raises(ValueError, match="keeps 1"):
        stats.location(np.arange(3.0), 0.34)


@pytest.mark.parametrize("sd,n,trim", [(0.006, 12, 0.2), (0.01, 10, 0.1)])
def test_trimmed_minimum_detectable_difference_has_about_the_target_power_by_simulation(sd, n, trim):
    """Normal differences: the noncentral-t approximation at the population's winsorized SD gives the trimmed test
    about the target power."""
    alpha = 0.025
    rng = np.random.default_rng(0)
    g = math.floor(trim * n)

    def winsorized_and_trimmed(d):
        d = np.sort(d, axis=1)
        low, high = d[:, g : g + 1], d[:, n - g - 1 : n - g]
        return np.clip(d, low, high), d[:, g : n - g].mean(1)

    population = np.sort(rng.normal(0, sd, 1_000_000))
    k = int(trim * len(population))
    winsorized_sd = float(np.clip(population, population[k], population[-k - 1]).std())
    delta = stats.minimum_detectable_difference(winsorized_sd, n, alpha=alpha, trim=trim)
    winsorized, trimmed_mean = winsorized_and_trimmed(rng.normal(delta, sd, size=(20000, n)))
    t = trimmed_mean / (winsorized.std(1, ddof=1) / ((1 - 2 * trim) * np.sqrt(n)))
    rejected = np.mean(np.abs(t) > sps.t.ppf(1 - alpha / 2, n - 2 * g - 1))
    assert rejected == pytest.approx(0.8, abs=0.05)


def test_simulated_power_of_clean_normal_differences_is_the_noncentral_t_power():
    exact = stats.power(0.01, 0.01, 8, alpha=0.05)
    assert stats.simulated_power(0.01, 0.01, 8, draws=3000) == pytest.approx(exact, abs=0.03)
    # Collapsed runs cost the mean's test power and the trimmed mean's far less.
    mean = stats.simulated_power(0.015, 0.007, 12, contaminated=0.2, alpha=0.025, draws=1000)
    trimmed = stats.simulated_power(0.015, 0.007, 12, trim=0.2, contaminated=0.2, alpha=0.025, draws=1000)
    assert trimmed > mean + 0.2
    # At margin 0.01 and no true difference, the TOST finds equivalence at about its own power.
    assert stats.simulated_power(0.0, 0.003, 10, margin=0.01, draws=1000) > 0.95
