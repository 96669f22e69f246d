import math

import pytest
import torch
import torch.nn.functional as F

import kd_helpers as kd


def test_student_matches_the_report_figure_1():
    from torchinfo import summary
    student = kd.StudentNet()
    assert kd.count_parameters(student) == 95_386
    stats = summary(student, input_size=(1, 3, 28, 28), verbose=0)
    assert stats.total_params == 95_386
    assert round(kd.count_mult_adds(student) / 1e6, 2) == 9.78
    assert 9.78e6 < stats.total_mult_adds < 9.9e6  # torchinfo 1.8 also counts biases and batch norm
    figure_1 = [("Conv2d", [32, 28, 28], 896), ("BatchNorm2d", [32, 28, 28], 64), ("Conv2d", [32, 28, 28], 9248),
                ("BatchNorm2d", [32, 28, 28], 64), ("AvgPool2d", [32, 14, 14], 0), ("Conv2d", [32, 14, 14], 9248),
                ("BatchNorm2d", [32, 14, 14], 64), ("AvgPool2d", [32, 7, 7], 0), ("Dropout", [1568], 0),
                ("Linear", [48], 75312), ("Linear", [10], 490)]
    rows = [(layer.class_name, layer.output_size[1:], layer.num_params) for layer in stats.summary_list[1:]]
    assert rows == figure_1
    assert student(torch.zeros(2, 3, 28, 28)).shape == (2, 10)


def test_improved_student_spends_its_budget_on_convolution():
    student = kd.build_model("student_gap")
    linear = sum(m.weight.numel() + m.bias.numel() for m in student.modules() if isinstance(m, torch.nn.Linear))
    assert kd.count_parameters(student) == 94_250 < 100_000
    assert linear == 1_290  # one 128 -> 10 layer after global average pooling (StudentNet's fc1 alone: 75,312)
    assert round(kd.count_mult_adds(student) / 1e6, 2) == 20.03
    assert student(torch.zeros(2, 3, 28, 28)).shape == (2, 10)
    assert student(torch.zeros(2, 3, 36, 36)).shape == (2, 10)  # the pooled head takes any input size


def test_improved_student_checkpoint_rebuilds_from_its_arch(tmp_path):
    student = kd.build_model("student_gap").eval()
    kd.save_checkpoint(student, {"arch": "student_gap"}, tmp_path / "s.pt")
    reloaded, meta = kd.load_checkpoint(tmp_path / "s.pt")
    x = torch.randn(4, 3, 28, 28)
    assert isinstance(reloaded, kd.GapStudentNet) and torch.equal(reloaded(x), student(x))


def test_teacher_state_dict_loads_into_torchvision_resnet50():
    import torchvision
    teacher = kd.build_model("resnet50")
    torchvision.models.resnet50(num_classes=10).load_state_dict(teacher.state_dict())
    assert teacher(torch.zeros(2, 3, 28, 28)).shape == (2, 10)


def test_stride1_teacher_keeps_torchvision_shapes_and_doubles_the_resolution():
    import torchvision
    teacher = kd.build_model("resnet50_stride1")
    reference = torchvision.models.resnet50(num_classes=10)
    reference.load_state_dict(teacher.state_dict())  # same keys and shapes
    assert teacher.conv1.stride == (1, 1) and reference.conv1.stride == (2, 2)
    x = torch.zeros(2, 3, 28, 28)
    layer1 = lambda m: m.layer1(m.maxpool(m.relu(m.bn1(m.conv1(x)))))
    assert layer1(teacher).shape[-1] == 14 and layer1(reference).shape[-1] == 7
    assert teacher(x).shape == (2, 10)


def test_unknown_model_name_is_refused():
    with pytest.raises(ValueError, match="unknown model 'resnet18'.*student_net"):
        kd.build_model("resnet18")


def test_distillation_loss_against_a_hand_computed_value():
    s = torch.tensor([[1.0, 0.0]])
    t = torch.tensor([[0.0, 1.0]])
    y = torch.tensor([0])
    T, alpha = 2.0, 0.25
    # softmax([0.5, 0]) = (a, 1 - a) with a = 1 / (1 + e^-0.5); the teacher's is its mirror (1 - a, a)
    a = 1 / (1 + math.exp(-0.5))
    kl = (1 - a) * math.log((1 - a) / a) + a * math.log(a / (1 - a))
    ce = -math.log(1 / (1 + math.exp(-1.0)))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert kd.distillation_loss(s, t, y, T, alpha).item() == pytest.approx(expected, rel=1e-6)


def test_distillation_loss_limits():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
    y = torch.randint(0, 10, (16,), generator=g)
    assert kd.distillation_loss(s, t, y, 3.0, 0.0).item() == pytest.approx(F.cross_entropy(s, y).item())
    assert kd.distillation_loss(s, s, y, 3.0, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd.distillation_loss(s, t, y, 3.0, 1.0).item() > 0


def test_decoupled_kd_splits_classic_kd_into_its_two_parts():
    g = torch.Generator().manual_seed(1)
    for _ in range(5):
        s, t, y, T = torch.randn(1, 10, generator=g), torch.randn(1, 10, generator=g), torch.randint(0, 10, (1,), generator=g), 3.0
        ce = F.cross_entropy(s, y).item()
        tckd = kd.decoupled_kd_loss(s, t, y, T, alpha=1.0, beta=0.0).item() - ce
        nckd = kd.decoupled_kd_loss(s, t, y, T, alpha=0.0, beta=1.0).item() - ce
        kl = (kd.distillation_loss(s, t, y, T, alpha=1.0).item())  # T^2 * KL
        p_target = torch.softmax(t / T, 1)[0, y].item()
        assert kl == pytest.approx(tckd + (1 - p_target) * nckd, rel=1e-4, abs=1e-6)
        assert tckd >= -1e-6 and nckd >= -1e-6


def test_decoupled_kd_of_identical_logits_is_cross_entropy():
    g = torch.Generator().manual_seed(2)
    s, y = torch.randn(8, 10, generator=g), torch.randint(0, 10, (8,), generator=g)
    assert kd.decoupled_kd_loss(s, s, y).item() == pytest.approx(F.cross_entropy(s, y).item(), abs=1e-6)
