from django.contrib import admin

from dataspace.models import DataCategory


@admin.register(DataCategory)
class DataCategoryAdmin(admin.ModelAdmin[DataCategory]):
    list_display = ("slug", "title", "special_category", "field_count")
    list_filter = ("special_category",)
    search_fields = ("slug", "title")

    @admin.display(description="fields")
    def field_count(self, obj: DataCategory) -> int:
        return len(obj.fields)
