using System;
using System.Reflection;
using System.Runtime.InteropServices;
using Virtio.Ring.Packed;
using Virtio.Ring.Split;

namespace Virtio.Ring.Tests;

/// <summary>
/// Each side's mutable private state sits between two 128-byte pads, so the other side's state (possibly the
/// next object on the heap) never shares its cache lines.
/// </summary>
public class PrivateStateLayoutTests
{
    [Theory]
    [InlineData(typeof(SplitDeviceVirtqueue), "DeviceState")]
    [InlineData(typeof(SplitDriverVirtqueue<int>), "SplitDriverState")]
    [InlineData(typeof(PackedDeviceVirtqueue), "DeviceState")]
    [InlineData(typeof(PackedDriverVirtqueue<int>), "PackedDriverState")]
    public void Hot_state_is_padded_by_128_bytes_on_both_sides(Type owner, string stateName)
    {
        Type state = owner.GetNestedType(stateName, BindingFlags.NonPublic)
            ?? owner.Assembly.GetType($"{owner.Namespace}.{stateName}")!;

        Assert.True(state.IsLayoutSequential);
        FieldInfo[] fields = state.GetFields(BindingFlags.Public | BindingFlags.Instance);
        Assert.Equal("Before", fields[0].Name);
        Assert.Equal("After", fields[^1].Name);
        int size = Marshal.SizeOf(state);
        int firstHot = Marshal.OffsetOf(state, fields[1].Name).ToInt32();
        int after = Marshal.OffsetOf(state, "After").ToInt32();
        Assert.True(firstHot >= 128, $"{firstHot}");
        Assert.True(size - after >= 128, $"{size - after}");

        // The owner keeps all of its mutable scalar state inside: no other non-readonly value-type field.
        foreach (FieldInfo f in owner.GetFields(BindingFlags.NonPublic | BindingFlags.Instance))
        {
            bool mutableScalar = !f.IsInitOnly && f.FieldType.IsValueType && f.FieldType != state;
            Assert.False(mutableScalar, $"{owner.Name}.{f.Name} is mutable state outside the padded struct");
        }
    }
}
