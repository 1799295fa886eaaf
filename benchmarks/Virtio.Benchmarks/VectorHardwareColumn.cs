using System.Runtime.Intrinsics;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace Virtio.Benchmarks;

/// <summary>
/// A column that says, for each benchmark, which vector width the hardware accelerates: a method named after
/// Vector512 or Vector256 shows "not accelerated (software)" when the CPU lacks it, so a slow number there is read
/// as what it is (an emulated path), not as the library's speed. Other methods show the widest accelerated width,
/// the one the library's own dispatch picks.
/// </summary>
public sealed class VectorHardwareColumn : IColumn
{
    public string Id => nameof(VectorHardwareColumn);

    public string ColumnName => "Vector hardware";

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Job;

    public int PriorityInCategory => 0;

    public bool IsNumeric => false;

    public UnitType UnitType => UnitType.Dimensionless;

    public string Legend => "Vector512/Vector256 methods: whether this CPU accelerates them; others: the widest accelerated width (what dispatch picks)";

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase)
    {
        string method = benchmarkCase.Descriptor.WorkloadMethod.Name;
        if (method.Contains("Vector512", System.StringComparison.Ordinal))
        {
            return Vector512.IsHardwareAccelerated ? "AVX-512" : "not accelerated (software)";
        }

        if (method.Contains("Vector256", System.StringComparison.Ordinal))
        {
            return Vector256.IsHardwareAccelerated ? "256-bit" : "not accelerated (software)";
        }

        return Vector512.IsHardwareAccelerated ? "dispatch: 512-bit" : Vector256.IsHardwareAccelerated ? "dispatch: 256-bit"
            : Vector128.IsHardwareAccelerated ? "dispatch: 128-bit" : "dispatch: scalar";
    }

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) => GetValue(summary, benchmarkCase);

    public bool IsAvailable(Summary summary) => true;

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public override string ToString() => ColumnName;
}

/// <summary>Adds <see cref="VectorHardwareColumn"/> to a benchmark class: <c>[Config(typeof(VectorHardwareConfig))]</c>.</summary>
public sealed class VectorHardwareConfig : ManualConfig
{
    public VectorHardwareConfig() => AddColumn(new VectorHardwareColumn());
}
