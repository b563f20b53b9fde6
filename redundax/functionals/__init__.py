"""Pure, jit/vmap/grad-safe redundancy functionals (no state, no I/O; Flax only in `variational`).

Samples are shaped `(..., n, d)`: n samples on axis -2, d units on axis -1, leading axes are batch
axes. Information is in nats. See each module for the paper equations it implements:

- `moments`: mergeable `Moments`, `covariance`, `correlation`.
- `gaussian`: Gaussian total correlation (Prop. 4), mutual information, chi-square proxy (Prop. 5).
- `spectral`: spectral entropy, effective rank, spectral redundancy (Def. 2, Prop. 6).
- `attention`: attention-head redundancy (Sec. 3.5).
- `fdiv`: f-kernels and R_f (Def. 1, eq. 1) on discrete tables and Gaussian closed forms.
- `entropy_rate`: layer redundancy scores (eq. 25) and entropy-rate estimators (layer pruning paper).
- `channels`: two-axis per-channel information (channel paper), imported as a submodule.
- `higher_order`: dual total correlation, O- and S-information (Gaussian, discrete), multiplets.
- `knn`: Kraskov-Stoegbauer-Grassberger nearest-neighbour total correlation.
- `variational`: Fenchel-dual lower bound on R_f with a trained critic (uses Flax NNX and optax).
- `bootstrap`: bootstrap, subsampling and jackknife intervals for any sample functional.
- `sensitivity`: perturbation-sensitivity redundancy score of an encoder (RedReg).
- `similarity`: cross-modal cosine similarity of paired features (RedReg's gate signal).
"""

from redundax.functionals.attention import head_redundancy
from redundax.functionals.bootstrap import (
    Interval,
    bootstrap_interval,
    jackknife_interval,
    resampled_statistics,
)
from redundax.functionals.entropy_rate import (
    RedundancyAccumulator,
    cosine_entropy_rates,
    first_order_conditional_entropy,
    first_order_entropy_rate,
    gaussian_entropy_constant,
    layer_redundancy_scores,
    spacetime_redundancy_scores,
)
from redundax.functionals.fdiv import (
    FKernel,
    f_redundancy,
    gaussian_f_redundancy,
    get_kernel,
    jensen_shannon,
    kl,
    pearson_chi2,
    product_of_marginals,
    renyi,
    renyi_divergence,
    squared_hellinger,
    total_variation,
)
from redundax.functionals.gaussian import (
    chi2_redundancy,
    chi2_redundancy_from_corr,
    gaussian_mi_from_r2,
    gaussian_mutual_information,
    gaussian_total_correlation,
    gaussian_total_correlation_from_corr,
)
from redundax.functionals.higher_order import (
    HigherOrder,
    all_subsets,
    discrete_higher_order,
    discrete_unit_contributions,
    gaussian_dual_total_correlation,
    gaussian_higher_order,
    gaussian_higher_order_from_corr,
    gaussian_multiplets,
    gaussian_o_information,
    gaussian_s_information,
    gaussian_unit_contributions,
    gaussian_unit_contributions_from_corr,
)
from redundax.functionals.knn import ksg_total_correlation
from redundax.functionals.moments import (
    Moments,
    correlation,
    correlation_from_covariance,
    covariance,
)
from redundax.functionals.sensitivity import perturbation_sensitivity
from redundax.functionals.similarity import cross_modal_similarity
from redundax.functionals.spectral import (
    covariance_spectrum,
    effective_rank,
    spectral_entropy,
    spectral_entropy_from_covariance,
    spectral_redundancy,
    spectral_redundancy_from_covariance,
)
from redundax.functionals.variational import (
    Critic,
    VariationalEstimate,
    output_activation,
    shuffle_units,
    variational_redundancy,
)

__all__ = [
    "Critic",
    "FKernel",
    "HigherOrder",
    "Interval",
    "Moments",
    "RedundancyAccumulator",
    "VariationalEstimate",
    "all_subsets",
    "bootstrap_interval",
    "chi2_redundancy",
    "chi2_redundancy_from_corr",
    "correlation",
    "correlation_from_covariance",
    "cosine_entropy_rates",
    "covariance",
    "covariance_spectrum",
    "cross_modal_similarity",
    "discrete_higher_order",
    "discrete_unit_contributions",
    "effective_rank",
    "f_redundancy",
    "first_order_conditional_entropy",
    "first_order_entropy_rate",
    "gaussian_dual_total_correlation",
    "gaussian_entropy_constant",
    "gaussian_f_redundancy",
    "gaussian_higher_order",
    "gaussian_higher_order_from_corr",
    "gaussian_mi_from_r2",
    "gaussian_multiplets",
    "gaussian_mutual_information",
    "gaussian_o_information",
    "gaussian_s_information",
    "gaussian_total_correlation",
    "gaussian_total_correlation_from_corr",
    "gaussian_unit_contributions",
    "gaussian_unit_contributions_from_corr",
    "get_kernel",
    "head_redundancy",
    "jackknife_interval",
    "jensen_shannon",
    "kl",
    "ksg_total_correlation",
    "layer_redundancy_scores",
    "output_activation",
    "pearson_chi2",
    "perturbation_sensitivity",
    "product_of_marginals",
    "renyi",
    "renyi_divergence",
    "resampled_statistics",
    "shuffle_units",
    "spacetime_redundancy_scores",
    "spectral_entropy",
    "spectral_entropy_from_covariance",
    "spectral_redundancy",
    "spectral_redundancy_from_covariance",
    "squared_hellinger",
    "total_variation",
    "variational_redundancy",
]
