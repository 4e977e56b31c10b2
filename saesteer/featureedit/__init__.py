"""FeatureEdit: find the SAE features that carry a piece of knowledge, erase them, and measure what
changed (reliability, generality) and what did not (locality, perplexity).

- :mod:`.facts`     facts (prompt, answer, subject) and their tokenisation
- :mod:`.select`    ranking by activation contrast or attribution, over one or several hooks
- :mod:`.neurons`   the neuron baseline: a layer's raw coordinates as an exact SAE
- :mod:`.evaluate`  reliability, generality, locality, delta perplexity, the printed table
- :mod:`.recipe`    the JSON recipe and the model/SAE identity checks
- :mod:`.edit`      the FeatureEdit value object (an edit spec for ``model.edits(...)``)
"""

from saesteer.featureedit.edit import FeatureEdit
from saesteer.featureedit.evaluate import EditReport, GroupResult, Probes
from saesteer.featureedit.facts import Fact
from saesteer.featureedit.neurons import neuron_basis, neuron_view
from saesteer.featureedit.select import SelectedUnit, Selection

__all__ = ["FeatureEdit", "EditReport", "GroupResult", "Probes", "Fact", "neuron_basis", "neuron_view",
           "SelectedUnit", "Selection"]
